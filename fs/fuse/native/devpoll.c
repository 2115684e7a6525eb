// devpoll: lets the Node event loop itself wait for /dev/fuse to become readable.
//
// Node cannot poll a character device: fs.read on /dev/fuse blocks a libuv threadpool thread,
// and every request then costs a hop from that thread back to the event loop (measured: ~100 us
// of the ~140 us a trivial request took). With the descriptor in non-blocking mode and a
// uv_poll watcher on the loop, the kernel wakes the loop directly and the request is read and
// answered on the same thread.
//
// API (all synchronous, loop thread only):
//   setNonBlocking(fd)            O_NONBLOCK on the open file description
//   read(fd, buffer) -> n         read(2) into the whole buffer: bytes read, or -errno
//                                 (-EAGAIN: nothing queued; never throws for an errno)
//   watch(fd, onReadable) -> w    calls onReadable() whenever fd is readable (level-triggered)
//   pause(w) / resume(w)          stop / restart watching (a level-triggered watcher with nobody
//                                 to take the request would spin the loop)
//   unwatch(w)                    stops the watcher for good; safe to call twice
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#define CHECK(env, call)                                               \
  do {                                                                 \
    if ((call) != napi_ok) {                                           \
      napi_throw_error((env), NULL, "devpoll: N-API call failed: " #call); \
      return NULL;                                                     \
    }                                                                  \
  } while (0)

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int stopped;
} watcher_t;

static int32_t arg_fd(napi_env env, napi_value v, int *ok) {
  int32_t fd = -1;
  *ok = napi_get_value_int32(env, v, &fd) == napi_ok && fd >= 0;
  if (!*ok) napi_throw_type_error(env, NULL, "devpoll: fd must be a non-negative integer");
  return fd;
}

static napi_value set_non_blocking(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int ok;
  int32_t fd = arg_fd(env, argc > 0 ? argv[0] : NULL, &ok);
  if (!ok) return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    napi_throw_error(env, NULL, "devpoll: fcntl(O_NONBLOCK) failed");
    return NULL;
  }
  return NULL;
}

static napi_value do_read(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "devpoll: read(fd, buffer)");
    return NULL;
  }
  int ok;
  int32_t fd = arg_fd(env, argv[0], &ok);
  if (!ok) return NULL;
  void *data;
  size_t length;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "devpoll: buffer must be a Buffer");
    return NULL;
  }
  ssize_t n;
  do {
    n = read(fd, data, length);
  } while (n < 0 && errno == EINTR);
  napi_value result;
  CHECK(env, napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &result));
  return result;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  watcher_t *w = (watcher_t *)handle->data;
  if (w->stopped) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg, result;
  if (napi_get_reference_value(env, w->callback, &cb) == napi_ok && napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, status, &arg) == napi_ok) {
    // make_callback, not call_function: it drains the microtask queue afterwards, so the
    // promise continuations the callback starts run before the loop sleeps again.
    if (napi_make_callback(env, w->async, recv, cb, 1, &arg, &result) == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_close(uv_handle_t *handle) {
  free(handle->data);
}

static void finalize_watcher(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
  // The watcher's memory is owned by its uv handle (freed in on_close); nothing to do here.
}

static napi_value watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "devpoll: watch(fd, onReadable)");
    return NULL;
  }
  int ok;
  int32_t fd = arg_fd(env, argv[0], &ok);
  if (!ok) return NULL;
  napi_valuetype type;
  CHECK(env, napi_typeof(env, argv[1], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, NULL, "devpoll: onReadable must be a function");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "devpoll: out of memory");
    return NULL;
  }
  w->env = env;
  w->poll.data = w;
  napi_value name;
  if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
      napi_create_string_utf8(env, "o2fs.devpoll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->async) != napi_ok) {
    free(w);
    napi_throw_error(env, NULL, "devpoll: cannot set up the callback");
    return NULL;
  }
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc == 0) rc = uv_poll_start(&w->poll, UV_READABLE, on_poll);
  if (rc != 0) {
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->async);
    uv_close((uv_handle_t *)&w->poll, on_close);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  napi_value handle;
  CHECK(env, napi_create_external(env, w, finalize_watcher, NULL, &handle));
  return handle;
}

static watcher_t *arg_watcher(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok || !data) {
    napi_throw_type_error(env, NULL, "devpoll: expected a watcher");
    return NULL;
  }
  return data;
}

static napi_value pause_watch(napi_env env, napi_callback_info info) {
  watcher_t *w = arg_watcher(env, info);
  if (w && !w->stopped) uv_poll_stop(&w->poll);
  return NULL;
}

static napi_value resume_watch(napi_env env, napi_callback_info info) {
  watcher_t *w = arg_watcher(env, info);
  if (!w || w->stopped) return NULL;
  int rc = uv_poll_start(&w->poll, UV_READABLE, on_poll);
  if (rc != 0) napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
  return NULL;
}

static napi_value unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) {
    napi_throw_type_error(env, NULL, "devpoll: unwatch(watcher)");
    return NULL;
  }
  watcher_t *w = data;
  if (w->stopped) return NULL;
  w->stopped = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->async);
  uv_close((uv_handle_t *)&w->poll, on_close);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setNonBlocking", NULL, set_non_blocking, NULL, NULL, NULL, napi_default, NULL},
      {"read", NULL, do_read, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, watch, NULL, NULL, NULL, napi_default, NULL},
      {"pause", NULL, pause_watch, NULL, NULL, NULL, napi_default, NULL},
      {"resume", NULL, resume_watch, NULL, NULL, NULL, napi_default, NULL},
      {"unwatch", NULL, unwatch, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
