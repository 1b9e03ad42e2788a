"""cmkd.models.auxiliary: FitNet's hint regressor and Review KD's attention-based fusion, the
modules the methods train beside the student (their losses are tested in test_distill.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmkd.distill import hcl_loss, review_loss
from cmkd.models.auxiliary import ABF, ReviewFusion, hint_regressor


def test_hint_regressor_is_linear_for_vectors():
    reg = hint_regressor(5, 3)
    assert isinstance(reg, nn.Linear) and (reg.in_features, reg.out_features) == (5, 3)
    x = torch.randn(8, 5)
    torch.testing.assert_close(reg(x), x @ reg.weight.T + reg.bias)


def test_hint_regressor_is_conv1x1_and_bn_for_maps():
    conv = hint_regressor(4, 6, spatial=True).eval()
    assert [type(m).__name__ for m in conv] == ["Conv2d", "BatchNorm2d"]
    assert conv[0].kernel_size == (1, 1) and conv[0].bias is None
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        out = conv(x)
        bn = conv[1]
        ref = torch.einsum("oc,bchw->bohw", conv[0].weight[:, :, 0, 0], x)
        ref = ((ref - bn.running_mean[:, None, None])
               / (bn.running_var[:, None, None] + bn.eps).sqrt()
               * bn.weight[:, None, None] + bn.bias[:, None, None])
    assert out.shape == (2, 6, 5, 5)
    torch.testing.assert_close(out, ref)


def test_abf_without_fusion_is_project_then_output():
    torch.manual_seed(0)
    abf = ABF(3, 8, 4, fuse=False).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        out, fused = abf(x, torch.randn(2, 8, 2, 2))  # no attention: the deeper map is ignored
        torch.testing.assert_close(fused, abf.project(x))
        torch.testing.assert_close(out, abf.output(abf.project(x)))
    assert abf.attention is None


def test_abf_fusion_mixes_by_the_two_attention_maps():
    torch.manual_seed(0)
    abf = ABF(3, 8, 4, fuse=True).eval()
    x, deeper = torch.randn(2, 3, 4, 4), torch.randn(2, 8, 2, 2)
    with torch.no_grad():
        out, fused = abf(x, deeper)
        p = abf.project(x)
        up = F.interpolate(deeper, size=(4, 4), mode="nearest")
        att = torch.sigmoid(F.conv2d(torch.cat((p, up), 1), abf.attention[0].weight,
                                     abf.attention[0].bias))
        ref = p * att[:, :1] + up * att[:, 1:2]
        torch.testing.assert_close(fused, ref)
        torch.testing.assert_close(out, abf.output(ref))


def test_review_fusion_shapes_order_and_gradients():
    g = torch.Generator().manual_seed(3)
    fusion = ReviewFusion([3, 5], [4, 6], mid_channels=8)
    student = [torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 5, 4, 4, generator=g)]
    out = fusion(student)
    assert [o.shape for o in out] == [(2, 4, 8, 8), (2, 6, 4, 4)]
    # deep to shallow: the deepest stage's ABF fuses nothing, the shallower ones fuse
    assert fusion.abfs[1].attention is None and fusion.abfs[0].attention is not None
    fusion.eval()
    with torch.no_grad():
        base = fusion(student)
        moved = fusion([student[0], student[1] + 1.0])  # changing the deep stage only
        same_deep = fusion([student[0] + 1.0, student[1]])  # changing the shallow stage only
    assert not torch.allclose(base[0], moved[0])  # reaches the shallow output by fusion
    torch.testing.assert_close(base[1], same_deep[1])  # never reaches the deeper output
    fusion.train()
    teacher = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g)]
    loss = review_loss(student, teacher, fusion=fusion)
    assert loss.item() == pytest.approx(hcl_loss(fusion(student), teacher).item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_review_fusion_needs_a_teacher_stage_per_student_stage():
    with pytest.raises(ValueError, match="need as many teacher stages as student stages"):
        ReviewFusion([3, 5], [4], mid_channels=8)
