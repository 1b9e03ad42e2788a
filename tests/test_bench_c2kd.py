"""cmkd.bench.c2kd: the benchmark's code runs at tiny sizes (no timing is checked)."""

import math

import torch

import cmkd.distill.c2kd as c2kd_losses
from cmkd.bench import c2kd as bench


def test_official_filter_matches_ours_without_ties_and_is_restored():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    ours = c2kd_losses.filter_scores(t, s, "krc")
    official = bench.official_filter_scores(t, s)
    torch.testing.assert_close(official, ours)  # tau-b = tau-a without ties
    t[0] = 1.0  # a constant row: scipy's NaN fails the mask, as in the official code
    with bench.official_filter():
        assert c2kd_losses.filter_scores is bench.official_filter_scores
        mask = c2kd_losses.ofsd_mask(t, s, 0.0)
    assert not mask[0] and torch.equal(mask[1:], ours[1:] > 0)
    assert c2kd_losses.filter_scores is not bench.official_filter_scores


def test_run_tiny_pairs_every_variant():
    pairs = [bench.Pair("tiny CNNs", "avdigits_cnn", 10, 4, ("audio", (1, 32, 32)),
                        ("image", (1, 8, 8)), rounds=1, inner=1),
             bench.Pair("tiny ResNet-18s", "resnet18", 5, 2, ("audio", (1, 16, 16)),
                        ("visual", (3, 16, 16)), rounds=1, inner=1)]
    # the CUDA path's settings (bf16 autocast, channels_last) on the CPU: a dry run of its code
    rows = bench.run(pairs=pairs, amp=True, channels_last=True)
    assert len(rows) == len(pairs) * len(bench.VARIANTS)
    by = {(r["models"].split(":")[0], r["benchmark"]): r for r in rows}
    for pair in pairs:
        c2kd_row = by[(pair.name, bench.VARIANTS["c2kd"][1])]
        assert "over BD (target <= 10%)" in c2kd_row["check"]
        assert c2kd_row["speed-up"] > 0
        assert "official filter's step / ours" in by[(pair.name,
                                                      bench.VARIANTS["official_filter"][1])
                                                     ]["check"]
        assert by[(pair.name, bench.VARIANTS["bd"][1])]["cost vs BD"] == 1.0
    assert all(math.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows)
    assert all("bf16 autocast, channels_last" in r["device"] for r in rows)
