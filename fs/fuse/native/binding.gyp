{
  "targets": [
    {
      "target_name": "devpoll",
      "sources": ["devpoll.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
