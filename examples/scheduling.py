"""Flexible scheduling: at a specific time, or after a delay (crontab: see the README)."""

from datetime import datetime, timedelta

from jobengine import Job, Manager


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


if __name__ == "__main__":
    main()
