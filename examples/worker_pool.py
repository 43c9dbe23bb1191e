"""Worker pool management: size it, and resize it while it runs."""

import os

from jobengine import Manager


def whoami(_):
    return os.getpid()


def main():
    mgr = Manager(num_workers=5)  # go-job: NewManager(WithNumWorkers(5))
    mgr.start()
    mgr.resize_workers(10)  # go-job: mgr.ResizeWorkers(10)
    pids = set(mgr.map(whoami, range(200)))
    print(f"{mgr.num_workers} workers; jobs ran in {len(pids)} processes")
    mgr.resize_workers(2)
    print(sum(mgr.map(abs, range(-100, 0))))
    mgr.stop_with_wait()


if __name__ == "__main__":
    main()
