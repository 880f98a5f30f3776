"""Operations around the pipeline: the daemon lock, completion hooks, logs, the LaunchAgent and
`ttsd doctor`."""
