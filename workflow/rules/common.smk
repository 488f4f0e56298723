# Shared state: validated params, the paper specs, and the jobs they imply (stisr.papers.plan).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))

from stisr.config import ParamsError, validate_params, work_name, write_effective_params  # noqa: E402
from stisr.papers import identity, plan  # noqa: E402
from stisr.papers.spec import PSEUDO_SR, all_runs, load_common, load_specs  # noqa: E402

try:
    validate_params(config, "params.yaml (+ --config overrides)")
    identity.check_model_overrides(config)
except ParamsError as err:
    raise WorkflowError(str(err)) from None

SPECS = load_specs()
RUNS = all_runs(SPECS)
COMMON = load_common()
WORK = work_name(config)
DATA = str(plan.data_root(config))
JOBS = plan.all_jobs(config, SPECS)
# Every job reads exactly the configuration planned here (params.yaml + --config overrides),
# from a content-addressed copy, so that what the planner hashed is what the job runs.
EFFECTIVE_PARAMS = write_effective_params(config, Path(".snakemake/stisr-params"))
STISR = f"stisr --params {EFFECTIVE_PARAMS}"
EMBEDDED = config["source"] == "embedded"
LOGS = f"logs/{WORK}"
# one Snakemake benchmark file per job (wall, CPU, memory): results/<work>/timing.md sums them
BENCH = f"{LOGS}/benchmarks"

wildcard_constraints:
    run=r"[^/]+",
    sr=r"[^/]+",
    rec=r"[^/]+",
    testset=r"[^/]+",
    paper=r"[^/]+",
    table=r"[^/]+",
    figure=r"[^/]+",


def subset_dirs(testset):
    return [str(d) for dirs in plan.testset_dirs(config, testset).values() for d in dirs]


# one results folder per data source and scale: a smoke run never overwrites the demo's tables
RESULTS = f"results/{WORK}"
RESULTS_INDEX = f"{RESULTS}/README.md"
TABLE_FILES = [
    f"{RESULTS}/{p}/{t.id}.csv" for p in config["papers"] for t in SPECS[p].tables
]
FIGURE_FILES = [
    f"{RESULTS}/{p}/{f.id}.png" for p in config["papers"] for f in SPECS[p].figures
]
# MLflow gets every trained run (SR and recognition) and each parameter-free SR baseline.
TRACKED = sorted(
    set(JOBS.trains)
    | {sr for sr, _, _ in JOBS.evaluations if sr not in ("lr", "hr", "hr_bicubic_lr")}
)
TRACK_FILES = [f"runs/{WORK}/tracked/{plan.slug(ref)}.json" for ref in TRACKED]
