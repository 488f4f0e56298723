# One job per training run (SR models and recognizers alike), resumable from its last checkpoint.
from stisr.slurm_runtimes import load_runtimes, train_runtime  # noqa: E402

# SLURM time limit per run (minutes), from the GPU-hour estimate of benchmarks/gpu_hours.py; read
# once; a missing file or run gets 48 h (stisr/slurm_runtimes.py).
TRAIN_RUNTIMES = load_runtimes(Path(workflow.basedir) / "profiles" / "slurm" / "runtimes.yaml")


def train_inputs(wildcards):
    run = RUNS[plan.unslug(wildcards.run)]
    inputs = data_inputs(plan.train_set_dirs(config, run.train_set))
    if run.init:
        inputs += recognizer_inputs(run.init)
    for ref in run.init_modules.values():  # partial init of sub-modules
        inputs += recognizer_inputs(ref)
    if start := run.warm_start.get(config["scale"]):  # a shared run's weights (labelled)
        inputs += checkpoint_of(start)
    for ref in plan.asset_bindings(run).values():  # frozen networks of the objective
        asset = plan.resolve_asset(config, ref, RUNS)
        inputs += [asset[k] for k in ("path", "weights") if asset.get(k)]
    selection = plan.selection_settings(config, run, RUNS)
    if selection.get("select_recognizer"):  # params.yaml train.selection
        inputs.append(selection["select_recognizer"])
        inputs += data_inputs([d for dirs in selection.get("select_sets", {}).values() for d in dirs])
    return list(dict.fromkeys(inputs))


rule train:
    input:
        train_inputs,
    output:
        model=f"runs/{WORK}/train/{{run}}/model.pt",
        metrics=f"runs/{WORK}/train/{{run}}/metrics.json",
    benchmark:
        f"{BENCH}/train/{{run}}.tsv"
    log:
        f"{LOGS}/train/{{run}}.log",
    threads: config["train"]["torch_threads"]
    resources:
        runtime=lambda wc: train_runtime(wc.run, TRAIN_RUNTIMES),
    params:
        run=lambda wc: plan.unslug(wc.run),
        # the resolved TrainConfig: any change to it reruns this job and what reads its weights
        config=lambda wc: identity.train_hash(config, plan.unslug(wc.run), RUNS),
    shell:
        # --restart: checkpoints of an older configuration are set aside (kept), never resumed
        "{STISR} train --run {params.run} --restart 2> {log}"
