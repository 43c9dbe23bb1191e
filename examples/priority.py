"""Queue priority: higher values run first; equal priorities run in order."""

import time

from jobengine import Job, Manager


def main():
    order = []
    with Manager(num_workers=1) as mgr:
        blocker = mgr.schedule_job(Job(kind="blocker", executor=time.sleep), args=(0.3,))
        job = Job(
            kind="report",
            executor=lambda name: name,
            response_handler=lambda ji, r: order.append(r),
        )
        while not blocker.running():  # let the only worker get busy first
            time.sleep(0.001)
        for name, prio in [("low", 1), ("high", 10), ("mid", 5), ("high-2", 10)]:
            mgr.schedule_job(job, args=(name,), priority=prio)
    print(order)
    assert order == ["high", "high-2", "mid", "low"]


if __name__ == "__main__":
    main()
