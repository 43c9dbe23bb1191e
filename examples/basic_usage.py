"""go-job's "Basic Usage", translated."""

from jobengine import Job, Manager


def main():
    # Create a job manager
    mgr = Manager()

    # Register a job with a custom executor
    sum_job = Job(
        kind="sum",
        executor=lambda a, b: a + b,
        response_handler=lambda ji, res: ji.info(f"Result: {res}"),
        error_handler=lambda ji, err: ji.error(f"Error executing job: {err}"),
    )
    mgr.register_job(sum_job)

    # Schedule the registered job
    ji = mgr.schedule_registered_job("sum", args=(1, 2))

    # Start the job manager, then wait for the job to complete and stop
    mgr.start()
    mgr.stop_with_wait()

    # Retrieve and print the job instance state history
    for record in mgr.lookup_instance_history(ji):
        print(record.state)

    # Retrieve and print the job instance logs
    for log in mgr.lookup_instance_logs(ji):
        print(log.message)


if __name__ == "__main__":
    main()
