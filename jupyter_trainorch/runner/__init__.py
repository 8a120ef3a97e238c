"""Worker side of an attempt: the supervising Dask task and the job's child process."""
