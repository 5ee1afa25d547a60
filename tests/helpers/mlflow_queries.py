"""MLflow queries the tests share, and the verdicts' property every test sweep is checked against."""


def runs(client, experiment="activation-study"):
    """Every run of the experiment (none when it does not exist yet)."""
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=10000)


def assert_no_healthy_at_chance(uri: str) -> int:
    """The verdicts' property on every sweep the tests run: no FINISHED cell at chance (final
    validation loss at least 0.99 ln K and accuracy within 0.02 of 1/K) is `healthy`, and none whose
    validation accuracy is far above chance (accuracy progress >= 0.25 over the majority class's
    share) is called a no-progress pathology. Returns the number of cells checked."""
    import math

    from mlflow.tracking import MlflowClient

    from study import verdicts

    client = MlflowClient(tracking_uri=uri)
    checked = 0
    for r in runs(client):
        if r.data.tags.get("role") != "cell" or r.info.status != "FINISHED":
            continue
        k = int(r.data.params.get("data.num_classes", 10))
        loss = r.data.metrics.get("val/loss", float("nan"))
        acc = r.data.metrics.get("val/accuracy", float("nan"))
        said = (r.info.run_name, r.data.tags.get("verdict_reason"))
        if math.isfinite(loss) and loss >= 0.99 * math.log(k) and abs(acc - 1 / k) <= 0.02:
            assert r.data.tags["gradient_verdict"] != "healthy", said
        chance = r.data.metrics.get("diag/chance_accuracy", 1 / k)  # the majority class's share
        # (NaN where one class fills the validation set, e.g. a tiny preset's 2 examples: not checked)
        if r.data.tags.get("outcome") == "finished" and verdicts.accuracy_progress(acc, k, chance) >= 0.25:
            assert r.data.tags["gradient_verdict"] in ("healthy", "exploding"), said
        checked += 1
    assert_one_initial_finding_per_initial_weights(runs(client))
    return checked


# params that decide a cell's initial weights and its first batch: cells that agree on all of them
# start from the same weights (they differ only in optimizer, schedule, epochs or tracking)
_SAME_START = ("model.", "data.", "arm", "seed", "train.batch_size", "train.loss", "regularization.")
_SAME_START += ("mitigation.", "diagnostics.")


def assert_one_initial_finding_per_initial_weights(all_runs) -> int:
    """The verdicts' time-order property: cells with the same initial weights (the same params that
    decide the start, _SAME_START) carry the same `init_finding` whatever their optimizer. Returns the
    number of groups of two or more cells checked."""
    groups: dict[tuple, list] = {}
    for r in all_runs:
        finding = r.data.tags.get("init_finding")
        if r.data.tags.get("role") != "cell" or finding in (None, "unknown"):
            continue
        key = tuple(sorted((k, v) for k, v in r.data.params.items() if k.startswith(_SAME_START)))
        groups.setdefault(key, []).append((r.info.run_name, finding, r.data.tags.get("verdict_reason")))
    shared = [g for g in groups.values() if len(g) > 1]
    for g in shared:
        assert len({finding for _, finding, _ in g}) == 1, g
    return len(shared)
