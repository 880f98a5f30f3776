"""Intake: inbox files become jobs. The watcher turns file events into hints, the job-file parser
turns bytes into resolved job specs or rejections, and the intake thread takes complete files,
records their jobs in the queue and moves the files out of the inbox."""
