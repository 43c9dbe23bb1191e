"""The store interface: plug in your own store (here, one that counts the batches it
receives on top of the in-memory one)."""

from jobengine import Job, Manager, MemoryStore


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__(namespace="counting")
        self.batches = 0

    def append_states(self, batch):
        self.batches += 1
        super().append_states(batch)


def main():
    store = CountingStore()
    with Manager(num_workers=2, store=store) as mgr:
        job = Job(kind="square", executor=lambda x: x * x)
        results = [mgr.schedule_job(job, args=(i,)) for i in range(1000)]
        total = sum(r.result() for r in results)
    records = sum(len(mgr.lookup_instance_history(r)) for r in results)
    print(f"total {total}: {records} state records written in {store.batches} batches")
    assert records == 4000 and store.batches < records


if __name__ == "__main__":
    main()
