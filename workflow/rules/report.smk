# Tables, figures, the results index, and MLflow logging (an observer: nothing reads it back).


def table_evals(paper, table_id):
    table = next(t for t in SPECS[paper].tables if t.id == table_id)
    jobs = plan.table_jobs(config, table, RUNS)
    return [str(plan.eval_path(config, *e)) for e in jobs.evaluations] + [
        str(plan.complexity_path(config, *c)) for c in jobs.complexities
    ]


def paper_evals(paper):
    """Every metrics file the paper's tables and figures read."""
    figures = plan.figure_jobs(config, SPECS[paper], RUNS).evaluations
    extra = {str(plan.eval_path(config, *e)) for e in figures}
    return sorted({p for t in SPECS[paper].tables for p in table_evals(paper, t.id)} | extra)


rule table:
    input:
        lambda wc: table_evals(wc.paper, wc.table),
    output:
        csv=f"{RESULTS}/{{paper}}/{{table}}.csv",
        md=f"{RESULTS}/{{paper}}/{{table}}.md",
    benchmark:
        f"{BENCH}/table/{{paper}}/{{table}}.tsv"
    log:
        f"{LOGS}/report/{{paper}}_{{table}}.log",
    params:
        spec=lambda wc: identity.spec_hash(wc.paper, "table", wc.table),
    shell:
        "{STISR} table {wildcards.paper} {wildcards.table} --out {RESULTS} 2> {log}"


rule figure:
    input:
        lambda wc: paper_evals(wc.paper),
    output:
        png=report(
            f"{RESULTS}/{{paper}}/{{figure}}.png",
            category="{paper}",
            caption="../report/figure.rst",
        ),
        status=f"{RESULTS}/{{paper}}/{{figure}}.json",
    benchmark:
        f"{BENCH}/figure/{{paper}}/{{figure}}.tsv"
    log:
        f"{LOGS}/report/{{paper}}_{{figure}}.log",
    params:
        spec=lambda wc: identity.spec_hash(wc.paper, "figure", wc.figure),
    shell:
        "{STISR} figure {wildcards.paper} {wildcards.figure} --out {RESULTS} 2> {log}"


rule index:
    input:
        TABLE_FILES,
        FIGURE_FILES,
    output:
        report(RESULTS_INDEX, category="index", caption="../report/index.rst"),
    benchmark:
        f"{BENCH}/index/index.tsv"
    log:
        f"{LOGS}/report/index.log",
    shell:
        "{STISR} index --out {RESULTS} 2> {log}"


def track_inputs(wildcards):
    sr = plan.unslug(wildcards.sr)
    evals = [str(plan.eval_path(config, *e)) for e in JOBS.evaluations if sr in (e[0], e[1])]
    return evals + ([] if sr in PSEUDO_SR else [str(plan.run_dir(config, sr) / "metrics.json")])


rule track:
    input:
        track_inputs,
    output:
        f"runs/{WORK}/tracked/{{sr}}.json",
    benchmark:
        f"{BENCH}/track/{{sr}}.tsv"
    log:
        f"{LOGS}/track/{{sr}}.log",
    resources:
        mlflow_db=1,
    params:
        sr=lambda wc: plan.unslug(wc.sr),
        trained=lambda wc: "" if plan.unslug(wc.sr) in PSEUDO_SR else "--trained",
        evals=lambda wc, input: " ".join(p for p in input if p.endswith(".json") and "/eval/" in p),
    shell:
        "{STISR} track --run {params.sr} {params.trained} --evaluations {params.evals} "
        "--out {output} 2> {log}"


localrules:
    table,
    figure,
    index,
    track,
