"""The guidance's differentiable copies are rebuilt, never deep-copied, so a host's run-time state stays behind.

Dynamic VRAM (comfy-aimdo, on by default on NVIDIA in the newest ComfyUI) hangs private attributes on loaded
modules: handles, pinned host buffers, streamed weight views, and hooks. Here a module carries the same kinds
of things (one object refuses to be deep-copied, as a handle to pinned memory may), and the copy must give
the same outputs without any of them.
"""

from __future__ import annotations

import pytest
import torch
from helpers import pack, tiny

materialize = pack.guidance.differentiable_copies.materialize
RUN_TIME_ATTRIBUTES = ("_v", "_pin_state", "_v_weight")


class RefusesDeepcopy:
    """A handle that cannot be copied (a deep copy would raise, as copying live pinned memory would fail)."""

    def __deepcopy__(self, memo):
        raise RuntimeError("a streaming handle cannot be deep-copied")

    def __reduce_ex__(self, protocol):
        raise RuntimeError("a streaming handle cannot be pickled")


class Net(torch.nn.Module):
    """Registered and non-persistent buffers, a plain public tensor attribute read in forward (as pyiqa's
    CFANet keeps its normalization), a tied weight and plain settings."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 4, 1)
        self.tail = torch.nn.Conv2d(4, 4, 1)
        self.tail.weight = self.head.weight  # tied
        self.register_buffer("shift", torch.randn(1, 4, 1, 1))
        self.register_buffer("gain", torch.rand(1, 4, 1, 1) + 0.5, persistent=False)
        self.mean = torch.rand(1, 3, 1, 1)
        self.settings = {"scale": 0.5, "layers": [1, 2]}

    def forward(self, x):
        h = self.conv(x - self.mean) * self.gain + self.shift
        return self.tail(torch.relu(self.head(h))) * self.settings["scale"]


def stream(module: torch.nn.Module, calls: list) -> None:
    """Add what dynamic VRAM adds after a first load: per weighted module a handle, a large pinned-like host
    buffer and a weight view in private attributes, and a forward pre-hook of the host's code; and a public
    handle on the root."""

    def stream_weights(mod, args):
        calls.append(type(mod).__name__)

    stream_weights.__module__ = "comfy_aimdo.model_vbar"  # where the host's own hooks come from
    for m in module.modules():
        if any(True for _ in m.parameters(recurse=False)):
            m._v = RefusesDeepcopy()
            m._pin_state = {"host": torch.zeros(1 << 18), "pinned": True}
            m._v_weight = torch.zeros(4096)
            m.register_forward_pre_hook(stream_weights)
    module.handle = RefusesDeepcopy()


def assert_clean(copy_: torch.nn.Module) -> None:
    for m in copy_.modules():
        assert not set(RUN_TIME_ATTRIBUTES) & set(vars(m)), type(m).__name__
        assert not m._forward_pre_hooks and not m._forward_hooks  # the host's hooks stay behind
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            assert not t.is_inference() and not t.requires_grad


def test_a_streamed_module_is_copied_without_its_run_time_state():
    calls: list = []
    with torch.inference_mode():  # as a loader node inside a prompt builds it
        net = Net()
        stream(net, calls)
        x = torch.rand(2, 3, 8, 8)
        want = net(x)
    copy_ = materialize(net)
    assert_clean(copy_)
    assert copy_.handle is net.handle  # a public object is shared, never copied
    assert copy_.tail.weight is copy_.head.weight and copy_.settings == net.settings
    assert copy_.settings is not net.settings and not copy_.mean.is_inference()
    calls.clear()
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        got = copy_(xg)
        (grad,) = torch.autograd.grad(got.sum(), xg)
    assert calls == []  # the original's hooks did not come along
    assert torch.equal(got.detach(), want)  # bitwise: the same weights and kernels, in another module
    assert grad.abs().sum() > 0
    assert isinstance(net.conv._v, RefusesDeepcopy) and net.conv.weight.is_inference()  # the original is untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_host_taesd_decoder_streamed_is_copied_clean(dtype):
    """The host's own TAESD class, as the guidance copies its decoder (encoder dropped)."""
    import comfy.taesd.taesd as taesd_mod

    calls: list = []
    with torch.inference_mode(False):
        net = taesd_mod.TAESD()
        tiny.fill_(net, 5)
    with torch.inference_mode():
        net = net.requires_grad_(False)
        stream(net, calls)
        z = torch.randn(1, 4, 8, 8)
        want = net.decode(z)
    copy_ = materialize(net, dtype=dtype, drop=("taesd_encoder",))
    assert copy_.taesd_encoder is None
    assert_clean(copy_)
    assert all(p.dtype == dtype for p in copy_.parameters())
    calls.clear()
    with torch.inference_mode(False), torch.enable_grad():
        got = copy_.decode(z.to(dtype)).float()
    assert calls == []
    if dtype == torch.float32:
        assert torch.equal(got, want)  # bitwise: the same weights and kernels
    else:
        # bfloat16 keeps 8 bits of mantissa: through TAESD's conv stack the output moved by 1.8e-3 of its norm
        # here; 2e-2 leaves 10x for other kernels, and a wrong or missing weight moves it by its whole size.
        assert (got - want).norm() / want.norm() < 2e-2


def test_the_host_unet_streamed_is_copied_clean():
    """GenzIQA's guidance copies the whole host BaseModel (UNet and model_sampling) the same way."""
    calls: list = []
    base = tiny.tiny_model("sd15").model
    g = torch.Generator().manual_seed(0)
    x, ctx, sigma = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 6, 48, generator=g), torch.tensor([2.0])
    with torch.inference_mode():
        stream(base, calls)
        want = base.apply_model(x, sigma, c_crossattn=ctx)
    copy_ = materialize(base)
    assert_clean(copy_)
    assert copy_.latent_format is base.latent_format and copy_.model_config is base.model_config  # shared objects
    calls.clear()
    with torch.inference_mode(False), torch.enable_grad():
        got = copy_.apply_model(x, sigma, c_crossattn=ctx)
    assert calls == [] and torch.equal(got, want)  # bitwise: the same weights and kernels


class SaveOutput:
    def __init__(self):
        self.outputs: list = []

    def __call__(self, module, args, output):
        self.outputs.append(output)


class ReadsItsOwnHooks(torch.nn.Module):
    """As pyiqa's MANIQA: forward hooks installed at construction collect block outputs that forward reads."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
        self.save_output = SaveOutput()
        for block in self.blocks:
            block.register_forward_hook(self.save_output)

    def forward(self, x):
        self.blocks(x)
        out = torch.cat(self.save_output.outputs, dim=-1).sum(-1)
        self.save_output.outputs.clear()
        return out


def test_a_networks_own_forward_hooks_come_along():
    calls: list = []
    with torch.inference_mode():
        net = ReadsItsOwnHooks()
        stream(net, calls)
        x = torch.randn(3, 4)
        want = net(x)
    copy_ = materialize(net)
    assert all(len(b._forward_hooks) == 1 and not b._forward_pre_hooks for b in copy_.blocks)
    calls.clear()
    with torch.inference_mode(False), torch.enable_grad():
        got = copy_(x)
    assert calls == [] and torch.equal(got, want)  # its own hooks ran, the host's did not
