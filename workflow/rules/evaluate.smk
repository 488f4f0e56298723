# One job per (image source, recognizer, test set): accuracy per subset, PSNR and SSIM.


def checkpoint_of(ref):
    return [] if ref in PSEUDO_SR else [str(plan.run_dir(config, ref) / "model.pt")]


def recognizer_inputs(ref):
    if ref == "none":
        return []
    weights = plan.recognizer_checkpoint(config, plan.resolve_recognizer(config, ref, RUNS))
    return [] if weights is None else [str(weights)]


def evaluate_inputs(wildcards):
    sr, rec = plan.unslug(wildcards.sr), plan.unslug(wildcards.rec)
    return (
        checkpoint_of(sr)
        + recognizer_inputs(rec)
        + data_inputs(subset_dirs(wildcards.testset))
    )


rule evaluate:
    input:
        evaluate_inputs,
    output:
        f"runs/{WORK}/eval/{{sr}}/{{rec}}/{{testset}}.json",
    benchmark:
        f"{BENCH}/evaluate/{{sr}}/{{rec}}/{{testset}}.tsv"
    log:
        f"{LOGS}/eval/{{sr}}/{{rec}}/{{testset}}.log",
    threads: config["train"]["torch_threads"]
    params:
        sr=lambda wc: plan.unslug(wc.sr),
        rec=lambda wc: plan.unslug(wc.rec),
        # what shapes the metrics besides the input files: the scale's evaluation settings
        config=lambda wc: identity.eval_hash(config, wc.testset),
    shell:
        "{STISR} evaluate --sr {params.sr} --recognizer {params.rec} "
        "--testset {wildcards.testset} 2> {log}"


rule complexity:
    output:
        f"runs/{WORK}/complexity/{{sr}}+{{rec}}.json",
    benchmark:
        f"{BENCH}/complexity/{{sr}}/{{rec}}.tsv"
    log:
        f"{LOGS}/complexity/{{sr}}+{{rec}}.log",
    params:
        sr=lambda wc: plan.unslug(wc.sr),
        rec=lambda wc: plan.unslug(wc.rec),
        config=lambda wc: identity.complexity_hash(config, plan.unslug(wc.sr), plan.unslug(wc.rec), RUNS),
    shell:
        "{STISR} -q complexity --sr {params.sr} --recognizer {params.rec} 2> {log}"
