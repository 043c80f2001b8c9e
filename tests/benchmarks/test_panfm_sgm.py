"""benchmarks/panfm_sgm.py: endpoints from the protocol's rows, the gate, and the report over run files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import panfm_sgm


def _rows(entropy: float, dropped: float, curve: list[float], saliency: float = 0.4, share: float = 0.3) -> dict:
    return {"all organs": {"auroc_mean": 0.8, "organ_entropy": entropy},
            "organ saliency": {"saliency_heart": saliency, "uniform_share_heart": share},
            "drop heart where present": {"auroc_all": 0.8, "auroc_dropped": dropped, "auroc_drop": 0.8 - dropped},
            "drop random": {f"auroc_k{k}": v for k, v in enumerate(curve)}}


def test_endpoints_are_read_from_the_protocol_rows():
    e = panfm_sgm.endpoints(_rows(1.1, 0.7, [0.8, 0.7, 0.6, 0.5, 0.4]))
    assert e["entropy"] == 1.1 and e["auroc_dominant_dropped"] == 0.7 and e["auroc_dominant_drop"] == pytest.approx(0.1)
    assert e["auroc_random_area"] == pytest.approx(0.55)  # k = 1..4 only: the all-organ point is not in the area
    assert (e["saliency_dominant"], e["uniform_share_dominant"]) == (0.4, 0.3)


def _record(arm: str, seed: int, entropy: float, dropped: float, verdict: str | None = "learning") -> dict:
    ev = {"endpoints": panfm_sgm.endpoints(_rows(entropy, dropped, [0.8, 0.7, 0.6, 0.5, 0.4 + 0.01 * seed]))}
    pre = None if arm == "init" else {"curve": [[0, 1.3, 0.25], [100, entropy, 0.3]]}
    return {"arm": arm, "seed": seed, "pretrain": pre, "evaluation": ev,
            "health": {"verdict": verdict if arm != "init" else None,
                       "step0": {"organ_entropy": 1.3}, "final": {"organ_entropy": entropy}}}


def test_the_gate_needs_both_the_entropy_fall_and_the_dominant_saliency():
    rec = _record("random", 100, 1.0, 0.7)
    rec["evaluation"]["endpoints"].update(saliency_dominant=0.4, uniform_share_dominant=0.3)
    rec["health"]["step0"]["knn"] = rec["health"]["final"]["knn"] = 0.8
    assert panfm_sgm.gate_result(rec)["passed"]  # 1.0 / 1.3 = 0.77 <= 0.95 and 0.4 / 0.3 = 1.33 >= 1.1
    rec["evaluation"]["endpoints"]["saliency_dominant"] = 0.31  # attention fell onto another organ
    assert not panfm_sgm.gate_result(rec)["passed"]
    rec["evaluation"]["endpoints"]["saliency_dominant"] = 0.4
    rec["health"]["final"]["organ_entropy"] = 1.27  # 0.977 of step 0: did not move clearly
    assert not panfm_sgm.gate_result(rec)["passed"]


def test_report_pairs_by_seed_holms_once_and_leaves_out_runs_that_did_not_learn(tmp_path: Path):
    folder = tmp_path / "panfm"
    for s in range(5):
        for arm, ent, dropped in (("sgm", 1.2 + 0.01 * s, 0.75 + 0.002 * s), ("random", 1.0 + 0.012 * s, 0.70),
                                  ("init", 1.3, 0.5)):
            verdict = "not learning yet" if (arm == "random" and s == 4) else "learning"
            panfm_sgm.write_json(folder / "runs" / f"{arm}-seed{s}.json", _record(arm, s, ent, dropped, verdict))
    md = panfm_sgm.report(folder, None)
    assert "| sgm | n = 5 pretraining runs | 5 learning |" in md
    assert "1 excluded (seed 4: not learning yet)" in md
    entropy = next(line for line in md.splitlines() if line.startswith("| SGM raises organ-attention entropy"))
    # seeds 0-3 only (seed 4 of random did not learn): deltas 0.2, 0.198, 0.196, 0.194
    assert "+0.1970" in entropy and "n = 4 pretraining runs" in entropy and "| 4/4 |" in entropy
    assert entropy.rstrip(" |").endswith("supported")
    area = next(line for line in md.splitlines() if line.startswith("| SGM raises AUROC over the random-drop"))
    assert "no spread" in area  # both arms have the same curve at each seed: nothing to test
    assert "Instrument check" in md and "sgm − init on entropy: -0.0800" in md
    assert (folder / "panfm_entropy.png").is_file()
    premise = next(line for line in md.splitlines() if line.startswith("Premise per seed"))
    # the random arm's heart saliency 0.4 over its share 0.3; its entropy 1.0 + 0.012 s over the init's 1.3
    assert "seed 0 1.33" in premise and "seed 0 0.769" in premise and "seed 4 0.806" in premise


def test_the_runs_refuse_to_start_before_the_gate_passed(tmp_path: Path):
    with pytest.raises(SystemExit, match="the gate has not passed"):
        panfm_sgm.main(["--out", str(tmp_path), "--docs", "", "--arms", "sgm", "--seeds", "0"])
    (tmp_path / "gate.json").write_text(json.dumps({"passed": False}))
    with pytest.raises(SystemExit, match="the gate has not passed"):
        panfm_sgm.main(["--out", str(tmp_path), "--docs", "", "--arms", "sgm", "--seeds", "0"])


def test_a_failed_gate_is_reported_with_its_numbers_and_no_contrast(tmp_path: Path):
    rec = _record("random", 100, 1.29, 0.7)
    rec["health"]["step0"].update(knn=0.84, knn_majority=0.5)
    rec["health"]["final"].update(knn=0.95, knn_majority=0.5)
    panfm_sgm.write_json(tmp_path / "gate.json", panfm_sgm.gate_result(rec))
    md = panfm_sgm.report(tmp_path, None)
    assert "ratio 0.992, at most 0.95 required" in md and "**failed**" in md
    assert "0.840 at step 0 → 0.950" in md and "no confirmatory SGM-vs-random run" in md
    assert "No run file yet." in md and "Pre-registered contrasts" not in md


def _gate(tmp: Path, name: str, final_entropy: float, saliency: float) -> None:
    rec = _record("random", 300, final_entropy, 0.7)
    rec["evaluation"]["endpoints"].update(saliency_dominant=saliency, uniform_share_dominant=0.2)
    rec["health"]["step0"].update(knn=0.57, knn_majority=0.26)
    rec["health"]["final"].update(knn=0.69, knn_majority=0.26)
    panfm_sgm.write_json(tmp / name, {**panfm_sgm.gate_result(rec), "recipe": ["backbone.num_heads=2"]})


def test_earlier_gates_say_why_they_failed_and_no_run_is_made_after_them(tmp_path: Path):
    _gate(tmp_path, "gate-seed200.json", 1.26, 0.28)  # entropy 0.969 of step 0: spread
    _gate(tmp_path, "gate-seed300.json", 1.12, 0.12)  # concentrated (0.862), on another organ
    md = panfm_sgm.report(tmp_path, None)
    second = next(line for line in md.splitlines() if line.startswith("**Second gate"))
    third = next(line for line in md.splitlines() if line.startswith("**Third gate"))
    assert "seed 200" in second and "SGM's saliency would be near uniform" in second
    assert "seed 300" in third and "ratio 0.862" in third and "ratio 0.60" in third
    assert "concentrated on other organs than heart" in third and "(both diseases combined) 0.570" in third
    assert "`backbone.num_heads=2`" in third
    assert "**No gate has passed**" in md and "No run file yet." in md
    assert "First gate" not in md  # only the gate files that exist


def test_the_trials_table_names_each_trials_heart_saliency_and_most_attended_organ(tmp_path: Path):
    trials = {"date": "2026-12-02", "about": "About.", "trials": [
        {"trial": "t1", "change": "a", "code": "cli", "verdict": "learning", "entropy_ratio_final": 0.9,
         "entropy_ratio_lowest": 0.85, "knn_step0": 0.5, "knn_final": 0.7, "saliency_final": [0.1, 0.2, 0.5, 0.1, 0.1],
         "readout": {"note": "n", "attention_mass": [0.2] * 5, "contribution_auroc": [0.9, 0.8, 0.7, 0.6, 0.5]}}],
        "second_gate_heads": {"note": "h", "shares": [[0.5, 0.1, 0.1, 0.2, 0.1]], "entropy": [1.2],
                              "head_mean_entropy": 1.2}}
    (tmp_path / "trials.json").write_text(json.dumps(trials))
    md = panfm_sgm.report(tmp_path, None)
    assert "| t1 | a | cli | learning | 0.900 (0.850) | 0.500 → 0.700 | 0.100 | liver 0.500 |" in md
    assert "heart attention 0.200, AUROC 0.900" in md and "spleen attention 0.200, AUROC 0.500" in md
    assert "head 0 0.50, 0.10, 0.10, 0.20, 0.10 (entropy 1.20)" in md and panfm_sgm.TRIALS_READING in md


def test_the_init_arm_is_the_seeds_own_initial_weights_in_the_same_world(tmp_path: Path):
    """The floor: one step at lr 0 moves nothing (two steps export the same weights), starts from the network the
    arms start from (the monitor's step-0 read-out equals the random arm's), and its export records the world."""
    import torch

    from organfm.features.encoders import load_encoder

    args = panfm_sgm.parse_args(["--steps", "2", "--subjects", "32", "--batch-size", "8", "--threads", "1"])
    init = panfm_sgm.pretrain_run("init", 3, args, tmp_path / "init")
    assert init["steps"] == panfm_sgm.INIT_STEPS == 1 and "optim.lr=0" in init["overrides"]
    random = panfm_sgm.pretrain_run("random", 3, args, tmp_path / "random")
    assert init["health"]["step0"] == random["health"]["step0"]  # same seed, same network before any step
    assert init["health"]["final"]["organ_entropy"] == init["health"]["step0"]["organ_entropy"]
    panfm_sgm.INIT_STEPS = 2
    try:
        twice = panfm_sgm.pretrain_run("init", 3, args, tmp_path / "init2")
    finally:
        panfm_sgm.INIT_STEPS = 1
    assert twice["steps"] == 2
    weights = [load_encoder(str(tmp_path / name))[0]().state_dict() for name in ("init", "init2", "random")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])  # the random arm did move
    contract = load_encoder(str(tmp_path / "init"))[1]
    world = contract["synthetic_subjects"]
    assert world["dominant_strength"] == 1.0 and world["missing_prob"] == 0.02  # the recipe's world, not defaults
    assert contract["backbone_args"]["depth"] == 1 and contract["backbone_args"]["num_heads"] == 2
