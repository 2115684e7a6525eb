// nowait: reads and writes that never block, done on the calling (event loop) thread.
//
// A small read of a file-backed volume is usually a page-cache hit; sending it to libuv's
// threadpool costs two thread wake-ups (tens of microseconds on a VM) for a copy of a few
// kilobytes. preadv2/pwritev2 with RWF_NOWAIT do the I/O at once if it needs no waiting
// (the pages are cached, no writeback to wait for) and fail with EAGAIN otherwise, so the
// caller tries here first and falls back to the threadpool.
//
// API (synchronous; any thread, no JS callbacks):
//   pread(fd, buffer, offset) -> n    bytes read into buffer (may be short: the rest is not
//                                     cached), or -errno (-EAGAIN: would block; -EOPNOTSUPP:
//                                     the file does not support RWF_NOWAIT)
//   pwrite(fd, buffer, offset) -> n   bytes written (may be short), or -errno, likewise
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <sys/uio.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

typedef ssize_t (*io_fn)(int, const struct iovec *, int, off_t, int);

static ssize_t do_preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags) {
  return preadv2(fd, iov, n, off, flags);
}

static ssize_t do_pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags) {
  return pwritev2(fd, iov, n, off, flags);
}

// (fd, buffer, offset): validates the arguments, runs the I/O with RWF_NOWAIT.
static napi_value nowait_io(napi_env env, napi_callback_info info, io_fn fn) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "nowait: expected (fd, buffer, offset)");
    return NULL;
  }
  int32_t fd = -1;
  void *data = NULL;
  size_t length = 0;
  int64_t offset = -1;
  bool is_buffer = false;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || offset < 0) {
    napi_throw_type_error(env, NULL, "nowait: expected (fd >= 0, Buffer, offset >= 0)");
    return NULL;
  }
  struct iovec iov = {data, length};
  ssize_t n;
  do {
    n = fn(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  napi_value out;
  if (napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &out) != napi_ok) return NULL;
  return out;
}

static napi_value nowait_pread(napi_env env, napi_callback_info info) {
  return nowait_io(env, info, do_preadv2);
}

static napi_value nowait_pwrite(napi_env env, napi_callback_info info) {
  return nowait_io(env, info, do_pwritev2);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"pread", NULL, nowait_pread, NULL, NULL, NULL, napi_default, NULL},
      {"pwrite", NULL, nowait_pwrite, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
