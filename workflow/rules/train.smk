# One job per training run (SR models and recognizers alike), resumable from its last checkpoint.


def train_inputs(wildcards):
    run = RUNS[plan.unslug(wildcards.run)]
    inputs = data_inputs(plan.train_set_dirs(config, run.train_set))
    if run.init:
        rec = plan.resolve_recognizer(config, run.init, RUNS)
        inputs.append(
            str(plan.run_dir(config, rec.run) / "model.pt")
            if rec.run
            else f"data/official/weights/{rec.weights}.stisr.pt"
        )
    return inputs


rule train:
    input:
        train_inputs,
    output:
        model=f"runs/{WORK}/train/{{run}}/model.pt",
        metrics=f"runs/{WORK}/train/{{run}}/metrics.json",
    log:
        f"{LOGS}/train/{{run}}.log",
    threads: config["train"]["torch_threads"]
    params:
        run=lambda wc: plan.unslug(wc.run),
    shell:
        "{STISR} train --run {params.run} 2> {log}"
