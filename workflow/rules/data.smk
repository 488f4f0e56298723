from stisr.data.source_registry import load_sources  # noqa: E402

# Data at the edges: embedded generation or official download, then derived LR benchmark sets.
# Every dataset is a directory of LMDBs in the official formats, so one loader serves both sources.


def data_inputs(dirs):
    """The producing rule's output for each data folder (the dataset root, not the subfolder):
    str_lr/<kind> from `degrade_str`; otherwise the embedded generator's folder or the
    destination of the fetch-registry entry that holds the folder."""
    roots = set()
    for d in dirs:
        rel = Path(d).relative_to(DATA).parts
        if rel[0] == "str_lr":
            roots.add(str(Path(DATA, *rel[:2])))
        elif EMBEDDED:
            roots.add(str(Path(DATA, rel[0])))
        else:
            dests = [s.dest for s in load_sources().values() if Path(*rel).is_relative_to(s.dest)]
            if not dests:
                raise WorkflowError(f"no entry of sources.yaml provides {d}")
            roots.add(str(Path(DATA, max(dests, key=len))))
    return sorted(roots)


if EMBEDDED:

    rule synth_textzoom:
        output:
            directory(f"{DATA}/textzoom"),
        benchmark:
            f"{BENCH}/synth_textzoom/textzoom.tsv"
        log:
            f"{LOGS}/synth_textzoom.log",
        params:
            config=identity.data_hash(config, "textzoom"),
        shell:
            "{STISR} -q synth textzoom --out {output} 2> {log}"

    rule synth_str:
        output:
            directory(f"{DATA}/str"),
        benchmark:
            f"{BENCH}/synth_str/str.tsv"
        log:
            f"{LOGS}/synth_str.log",
        params:
            config=identity.data_hash(config, "str"),
        shell:
            "{STISR} -q synth str --out {output} 2> {log}"

else:
    # One rule per entry of the fetch registry (src/stisr/data/sources.yaml).
    for _src in load_sources().values():

        rule:
            name:
                f"fetch_{_src.name}"
            output:
                directory(f"data/official/{_src.dest}")
                if _src.archive != "none" or _src.kind == "dataset"
                else f"data/official/{_src.dest}",
            benchmark:
                f"{BENCH}/fetch/{_src.name}.tsv"
            log:
                f"logs/fetch/{_src.name}.log",
            params:
                name=_src.name,
            shell:
                "stisr fetch {params.name} --root data/official 2> {log}"

    rule import_weights:
        input:
            lambda wc: f"data/official/{load_sources()[wc.name].dest}",
        output:
            "data/official/weights/{name}.stisr.pt",
        benchmark:
            f"{BENCH}/import_weights/{{name}}.tsv"
        log:
            "logs/fetch/import_{name}.log",
        shell:
            "stisr import-weights {wildcards.name} --out {output} 2> {log}"


STR_HR = {name: dirs[0] for name, dirs in plan.testset_dirs(config, "str_hr").items()}


rule degrade_str:
    input:
        data_inputs(STR_HR.values()),
    output:
        directory(f"{DATA}/str_lr/{{kind}}"),
    wildcard_constraints:
        kind="commonlr|lemma|kdltr|ic15_352",
    benchmark:
        f"{BENCH}/degrade_str/{{kind}}.tsv"
    log:
        f"{LOGS}/degrade_{{kind}}.log",
    params:
        src=" ".join(f"{name}={path}" for name, path in STR_HR.items()),
    shell:
        "{STISR} -q degrade {wildcards.kind} --src {params.src} --out {output} 2> {log}"
