"""Flexible scheduling: at a specific time, after a delay, or by crontab."""

from datetime import datetime, timedelta

from jobengine import Job, Manager
from jobengine.schedule import preview


def main():
    with Manager(num_workers=1) as mgr:
        job = Job(kind="stamp", executor=lambda: datetime.now())
        # go-job: mgr.ScheduleJob(job, WithScheduleAt(time.Now().Add(10 * time.Minute)))
        at = mgr.schedule_job(job, schedule_at=datetime.now() + timedelta(seconds=0.3))
        # go-job: mgr.ScheduleJob(job, WithScheduleAfter(5 * time.Second))
        after = mgr.schedule_job(job, schedule_after=0.1)
        print("after ran at", after.result().time())
        print("at ran at   ", at.result().time())
        assert after.result() < at.result()

        # go-job: mgr.ScheduleJob(job, WithCrontabSpec("0 0 * * *"))  // every midnight
        nightly = mgr.schedule_job(Job(kind="nightly", executor=print, crontab="0 0 * * *"))
        print("nightly next fires at", nightly.scheduled_at.astimezone().isoformat())
        print("then", [t.isoformat() for t in preview("0 0 * * *", count=3)][1:])
        nightly.cancel()  # ends the recurrence


if __name__ == "__main__":
    main()
