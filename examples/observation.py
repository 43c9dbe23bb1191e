"""Job observation: handlers, state history and log history."""

from jobengine import Job, Manager


def main():
    with Manager(num_workers=1) as mgr:
        job = Job(
            kind="observe",
            executor=lambda a: a * 2,
            response_handler=lambda ji, res: ji.info(f"Job completed: {res}"),
            error_handler=lambda ji, err: ji.error(f"Job failed: {err}"),
            state_change_handler=lambda ji, state: print("state ->", state),
        )
        ji = mgr.schedule_job(job, args=(21,))
        ji.result()
    for record in mgr.lookup_instance_history(ji):
        print(f"State: {record.state}, ChangedAt: {record.timestamp}")
    for log in mgr.lookup_instance_logs(ji):
        print(f"[{log.level}] {log.timestamp}: {log.message}")


if __name__ == "__main__":
    main()
