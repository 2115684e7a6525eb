{
  "targets": [
    {
      "target_name": "nowait",
      "sources": ["nowait.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
