# One job per training run (SR models and recognizers alike), resumable from its last checkpoint.


def train_inputs(wildcards):
    run = RUNS[plan.unslug(wildcards.run)]
    inputs = data_inputs(plan.train_set_dirs(config, run.train_set))
    if run.init:
        inputs += recognizer_inputs(run.init)
    features = plan.perceptual_features(config, run)
    if features and features.get("weights"):  # ImageNet VGG for the perceptual loss
        inputs.append(features["weights"])
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
    log:
        f"{LOGS}/train/{{run}}.log",
    threads: config["train"]["torch_threads"]
    params:
        run=lambda wc: plan.unslug(wc.run),
    shell:
        "{STISR} train --run {params.run} 2> {log}"
