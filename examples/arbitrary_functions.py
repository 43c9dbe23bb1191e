"""Job execution with arbitrary functions: any signature, any picklable argument."""

from dataclasses import dataclass

from jobengine import Job, Manager


@dataclass
class ConcatOpt:
    a: str
    b: str


def concat(opt: ConcatOpt) -> str:
    return opt.a + " " + opt.b


def main():
    with Manager(num_workers=2) as mgr:
        sum_job = Job(kind="sum", executor=lambda a, b: a + b)
        concat_job = Job(kind="concat", executor=concat)
        s = mgr.schedule_job(sum_job, args=(1, 2))
        c = mgr.schedule_job(concat_job, args=(ConcatOpt("Hello", "world!"),))
        print(s.result(), c.result())


if __name__ == "__main__":
    main()
