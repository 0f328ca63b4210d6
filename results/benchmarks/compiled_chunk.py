"""Compare two versions of the engine by the program they compile: the chunk of the benchmark's
workloads (100 models), counted instruction by instruction (opcode and result shape).

    python results/benchmarks/compiled_chunk.py dump NAME      (run it once per version / worktree,
                                                                with that version importable first)
    python results/benchmarks/compiled_chunk.py compare A B

`dump` writes /tmp/ops_NAME_WORKLOAD.json and the optimised HLO text /tmp/hlo_NAME_WORKLOAD.txt;
`compare` prints, per workload, the instructions only one version has (tuples, parameters and
loop plumbing aside). Counting instructions rather than diffing text: this jax prints the
source-location tables (FileNames, StackFrames) at the top of the text, and names differ with
every renamed variable.
"""

from __future__ import annotations

import collections
import json
import re
import sys

WORKLOADS = ("stepfit_narrow", "stepfit_wide", "sumsq")
PLUMBING = ("tuple", "parameter", "while", "get-tuple-element")


def workload_config(workload: str, n_models: int = 100):
    from jaxfit import config

    if workload == "sumsq":
        return config.load(
            "sumsq",
            [
                "train.epochs=2",
                "task.eval_train=false",
                "model.init=manual",
                f"sweep.n_seeds={n_models}",
                "execution.chunk_epochs=1",
                "train.eval_batch_size=2000",
            ],
        )
    raw = config.to_dict(config.load("stepfit", ["train.steps=20000", f"sweep.n_seeds={n_models}"]))
    group = "wide" if workload == "stepfit_wide" else "narrow"
    raw["groups"] = {group: raw["groups"][group]}
    raw["train"].pop("stop_at", None)
    raw["train"].pop("stop_loss", None)  # the name before the seventh session
    return config.from_dict(raw, "bench")


def dump(name: str) -> None:
    from jaxfit import sweep

    for workload in WORKLOADS:
        prepared = sweep.prepare(workload_config(workload))
        text = prepared.program(0, None).as_text() if hasattr(prepared, "program") else prepared.chunk_fn.as_text()
        open(f"/tmp/hlo_{name}_{workload}.txt", "w").write(text)
        ops = collections.Counter()
        for line in text.splitlines():
            match = re.match(r"\s*(ROOT )?%[\w.\-]+ = (.+?) ([a-z\-]+)\(", line)
            if match:
                ops[f"{match.group(3)} {re.sub(r'{[^}]*}', '', match.group(2))}"] += 1
        json.dump(ops, open(f"/tmp/ops_{name}_{workload}.json", "w"))
        print(name, workload, sum(ops.values()), "instructions")


def compare(a: str, b: str) -> None:
    for workload in WORKLOADS:
        ops_a, ops_b = (collections.Counter(json.load(open(f"/tmp/ops_{n}_{workload}.json"))) for n in (a, b))
        only = {n: {k: v for k, v in (x - y).items() if k.split()[0] not in PLUMBING} for n, x, y in ((a, ops_a, ops_b), (b, ops_b, ops_a))}
        print(f"{workload}: {sum(ops_a.values())} vs {sum(ops_b.values())} instructions")
        for n, diff in only.items():
            print(f"  only {n}: {dict(sorted(diff.items())) or 'nothing'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"]:
        dump(sys.argv[2])
    elif sys.argv[1:2] == ["compare"]:
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
