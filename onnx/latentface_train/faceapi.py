"""face-api's face descriptor and age/gender networks as PyTorch modules (NCHW), and a
reader for TF.js weight files, so both can be exported as the bundle's `face_id` and
`face_attributes` graphs (see face_graphs.py and docs/faces.md).

The forward passes follow @vladmandic/face-api@1.7.15 (src/faceRecognitionNet,
src/ageGenderNet, src/xception) op for op:

- input: RGB 0..255, normalised as (x - [122.782, 117.001, 104.298]) / 255;
- `FaceIdNet`: dlib's ResNet (29 conv layers). A "conv layer" is conv + bias, then a
  per-channel scale (x * w + b), then optionally ReLU. The 7x7 stem and every first conv
  of a down block have stride 2 and TF 'valid' padding; the others are 3x3 'same'. The
  shortcut of a down block is a 2x2/2 average pool, zero-padded in channels when the
  block widens; where the strided conv comes out one pixel smaller than the pool (the
  last two down blocks at 150 px), the conv branch gets a zero row at the bottom and a
  zero column at the right. Global mean, then a 256x128 matrix (no bias).
- `FaceAttributesNet`: TinyXception with 2 main blocks. TF 'same' padding at stride 2
  pads the total (out-1)*s + k - in with the smaller half at the top/left (so at
  112 px: 0 before, 1 after); 'same' max pooling pads with -inf. Separable convs are a
  depthwise 3x3, a pointwise 1x1, then a bias. 7x7/2 average pool, then fc age [1]
  and fc gender [2] (softmax; index 0 = male, 1 = female).

All spatial sizes are fixed by the input size, so the padding is worked out when the
module is built (plain Pad nodes in the graph, nothing shape-dependent at run time).
`channels=` builds narrower variants with the same inputs and outputs (random weights)
for the tiny test bundle.
"""
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN_RGB = (122.782, 117.001, 104.298)
FACE_ID_SIZE = 150
FACE_ATTRIBUTES_SIZE = 112
DESCRIPTOR_DIM = 128
FACE_ID_CHANNELS = (32, 64, 128, 256)
FACE_ATTRIBUTES_CHANNELS = (32, 64, 128, 256, 512)  # conv_in, reduction 0, 1, exit reduction, exit conv


# ----------------------------------------------------------------------------- TF.js weights
_QUANT_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}
_PLAIN_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


def load_tfjs_weights(manifest_path):
    """Read a TF.js `*-weights_manifest.json` and its shards -> {name: float32/int32 array}.

    Each manifest group lists shard files (concatenated in order) and its weights in
    storage order. A weight with a `quantization` entry is stored in the quantized dtype:
    uint8/uint16 values v decode to v * scale + min (computed in float64, then rounded to
    float32, as TF.js does in JavaScript), float16 values are widened to float32.
    """
    manifest_path = Path(manifest_path)
    groups = json.loads(manifest_path.read_text())
    out = {}
    for group in groups:
        blob = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdt = np.dtype(_QUANT_DTYPES[q["dtype"]]).newbyteorder("<")
                raw = np.frombuffer(blob, qdt, count, offset)
                offset += count * qdt.itemsize
                if q["dtype"] == "float16":
                    values = raw.astype(np.float32)
                else:
                    if w["dtype"] != "float32":
                        raise ValueError(f"{w['name']}: affine quantization of {w['dtype']} is not supported")
                    values = (raw.astype(np.float64) * float(q["scale"]) + float(q["min"])).astype(np.float32)
            else:
                if w["dtype"] not in _PLAIN_DTYPES:
                    raise ValueError(f"{w['name']}: dtype {w['dtype']} is not supported")
                dt = np.dtype(_PLAIN_DTYPES[w["dtype"]]).newbyteorder("<")
                values = np.frombuffer(blob, dt, count, offset).astype(dt.newbyteorder("="))
                offset += count * dt.itemsize
            if w["name"] in out:
                raise ValueError(f"{manifest_path}: weight {w['name']} appears twice")
            out[w["name"]] = values.reshape(shape)
        if offset != len(blob):
            raise ValueError(f"{manifest_path}: {len(blob) - offset} bytes left over after the listed weights")
    return out


def _hwio_to_oihw(w):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1))))


def _depthwise_to_torch(w):
    """TF depthwise filter [kh, kw, C, 1] -> torch grouped conv weight [C, 1, kh, kw]."""
    if w.shape[3] != 1:
        raise ValueError("only channel multiplier 1 is supported")
    return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1))))


# ----------------------------------------------------------------------------- TF padding
def same_pads(size, k, s):
    """TF 'same' padding of one axis: (before, after, out_size)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


def valid_out(size, k, s):
    return (size - k) // s + 1


class Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / 255.0


# ----------------------------------------------------------------------------- face descriptor
class ScaledConv(nn.Module):
    """faceRecognitionNet convLayer: conv + bias, x * scale_w + scale_b, optional ReLU."""

    def __init__(self, cin, cout, k, stride, relu):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=0 if stride > 1 else k // 2)
        # stored [1, C, 1, 1] so the graph needs no reshapes
        self.scale_w = nn.Parameter(torch.ones(1, cout, 1, 1))
        self.scale_b = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.relu = relu

    def forward(self, x):
        out = self.conv(x)
        out = out * self.scale_w + self.scale_b
        return F.relu(out) if self.relu else out

    def load_tf(self, w, prefix):
        self.conv.weight.copy_(_hwio_to_oihw(w[f"{prefix}/conv/filters"]))
        self.conv.bias.copy_(torch.from_numpy(w[f"{prefix}/conv/bias"]))
        self.scale_w.copy_(torch.from_numpy(w[f"{prefix}/scale/weights"]).view(1, -1, 1, 1))
        self.scale_b.copy_(torch.from_numpy(w[f"{prefix}/scale/biases"]).view(1, -1, 1, 1))


class Residual(nn.Module):
    """residual (down=False) and residualDown (down=True) of faceRecognitionNet."""

    def __init__(self, cin, cout, size, down):
        super().__init__()
        if not down and cin != cout:
            raise ValueError("a plain residual block keeps its width")
        if cout < cin:
            raise ValueError("a down block may not narrow")
        self.down = down
        self.conv1 = ScaledConv(cin, cout, 3, 2 if down else 1, relu=True)
        self.conv2 = ScaledConv(cout, cout, 3, 1, relu=False)
        self.extra_channels = cout - cin
        self.out_size = size // 2 if down else size  # avgPool 2x2 'valid'
        conv_size = valid_out(size, 3, 2) if down else size
        self.grow = self.out_size - conv_size
        if self.grow not in (0, 1):  # face-api adds exactly one row and column
            raise ValueError(f"input size {size}: conv branch {conv_size} vs pool {self.out_size}")

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        if not self.down:
            return F.relu(out + x)
        if self.grow:
            out = F.pad(out, (0, self.grow, 0, self.grow))
        short = F.avg_pool2d(x, 2, 2)
        if self.extra_channels:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(short + out)


class FaceIdNet(nn.Module):
    """image [B,3,150,150] RGB 0..255 -> descriptor [B,128]."""

    # (name, stage index, down) in face-api's order
    BLOCKS = [("conv32_1", 0, False), ("conv32_2", 0, False), ("conv32_3", 0, False),
              ("conv64_down", 1, True), ("conv64_1", 1, False), ("conv64_2", 1, False), ("conv64_3", 1, False),
              ("conv128_down", 2, True), ("conv128_1", 2, False), ("conv128_2", 2, False),
              ("conv256_down", 3, True), ("conv256_1", 3, False), ("conv256_2", 3, False),
              ("conv256_down_out", 3, True)]

    def __init__(self, channels=FACE_ID_CHANNELS, size=FACE_ID_SIZE, out_dim=DESCRIPTOR_DIM):
        super().__init__()
        channels = list(channels)
        if len(channels) != 4:
            raise ValueError("FaceIdNet takes 4 stage widths")
        self.channels, self.size = channels, size
        self.normalize = Normalize()
        self.stem = ScaledConv(3, channels[0], 7, 2, relu=True)
        s = valid_out(valid_out(size, 7, 2), 3, 2)  # stem, then maxPool 3x3/2 'valid'
        blocks, cin = [], channels[0]
        for _, stage, down in self.BLOCKS:
            blk = Residual(cin, channels[stage], s, down)
            blocks.append(blk)
            cin, s = channels[stage], blk.out_size
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Parameter(torch.zeros(cin, out_dim))  # x @ fc, as tf.matMul

    def forward(self, image):
        x = self.stem(self.normalize(image))
        x = F.max_pool2d(x, 3, 2)
        for blk in self.blocks:
            x = blk(x)
        return torch.matmul(x.mean(dim=(2, 3)), self.fc)

    @torch.no_grad()
    def load_tf(self, w):
        if self.channels != list(FACE_ID_CHANNELS):
            raise ValueError("TF.js weights are for the full-width network")
        self.stem.load_tf(w, "conv32_down")
        for (name, _, _), blk in zip(self.BLOCKS, self.blocks):
            blk.conv1.load_tf(w, f"{name}/conv1")
            blk.conv2.load_tf(w, f"{name}/conv2")
        self.fc.copy_(torch.from_numpy(w["fc"]))
        return self


# ----------------------------------------------------------------------------- age / gender
class TfSamePad(nn.Module):
    """Explicit TF 'same' padding for a k x k window at stride s on a size x size input."""

    def __init__(self, size, k, s, value=0.0):
        super().__init__()
        b, a, self.out_size = same_pads(size, k, s)
        self.pads = (b, a, b, a)
        self.value = value

    def forward(self, x):
        if not any(self.pads):
            return x
        return F.pad(x, self.pads, value=self.value)


class SameConv(nn.Module):
    """tf.conv2d(x, filters, stride, 'same') + bias."""

    def __init__(self, cin, cout, k, stride, size):
        super().__init__()
        self.pad = TfSamePad(size, k, stride)
        self.conv = nn.Conv2d(cin, cout, k, stride)
        self.out_size = self.pad.out_size

    def forward(self, x):
        return self.conv(self.pad(x))

    def load_tf(self, w, prefix):
        self.conv.weight.copy_(_hwio_to_oihw(w[f"{prefix}/filters"]))
        self.conv.bias.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


class SeparableConv(nn.Module):
    """tf.separableConv2d(x, depthwise 3x3, pointwise 1x1, 1, 'same') + bias."""

    def __init__(self, cin, cout):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))

    def load_tf(self, w, prefix):
        self.depthwise.weight.copy_(_depthwise_to_torch(w[f"{prefix}/depthwise_filter"]))
        self.pointwise.weight.copy_(_hwio_to_oihw(w[f"{prefix}/pointwise_filter"]))
        self.pointwise.bias.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


class ReductionBlock(nn.Module):
    def __init__(self, cin, cout, size, activate_input=True):
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = SeparableConv(cin, cout)
        self.separable_conv1 = SeparableConv(cout, cout)
        self.pool_pad = TfSamePad(size, 3, 2, value=float("-inf"))
        self.expansion_conv = SameConv(cin, cout, 1, 2, size)
        self.out_size = self.pool_pad.out_size
        assert self.out_size == self.expansion_conv.out_size

    def forward(self, x):
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv0(out)
        out = self.separable_conv1(F.relu(out))
        out = F.max_pool2d(self.pool_pad(out), 3, 2)
        return out + self.expansion_conv(x)

    def load_tf(self, w, prefix):
        self.separable_conv0.load_tf(w, f"{prefix}/separable_conv0")
        self.separable_conv1.load_tf(w, f"{prefix}/separable_conv1")
        self.expansion_conv.load_tf(w, f"{prefix}/expansion_conv")


class MainBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.separable_conv0 = SeparableConv(c, c)
        self.separable_conv1 = SeparableConv(c, c)
        self.separable_conv2 = SeparableConv(c, c)

    def forward(self, x):
        out = self.separable_conv0(F.relu(x))
        out = self.separable_conv1(F.relu(out))
        out = self.separable_conv2(F.relu(out))
        return out + x

    def load_tf(self, w, prefix):
        for i in range(3):
            getattr(self, f"separable_conv{i}").load_tf(w, f"{prefix}/separable_conv{i}")


class FaceAttributesNet(nn.Module):
    """image [B,3,112,112] RGB 0..255 -> (age [B] in years, gender [B,2] softmax (male, female))."""

    def __init__(self, channels=FACE_ATTRIBUTES_CHANNELS, size=FACE_ATTRIBUTES_SIZE, main_blocks=2):
        super().__init__()
        channels = list(channels)
        if len(channels) != 5:
            raise ValueError("FaceAttributesNet takes 5 widths")
        self.channels, self.size = channels, size
        c_in, c_r0, c_r1, c_exit, c_out = channels
        self.normalize = Normalize()
        self.conv_in = SameConv(3, c_in, 3, 2, size)
        s = self.conv_in.out_size
        self.reduction_block_0 = ReductionBlock(c_in, c_r0, s, activate_input=False)
        s = self.reduction_block_0.out_size
        self.reduction_block_1 = ReductionBlock(c_r0, c_r1, s)
        s = self.reduction_block_1.out_size
        self.main_blocks = nn.ModuleList(MainBlock(c_r1) for _ in range(main_blocks))
        self.exit_reduction = ReductionBlock(c_r1, c_exit, s)
        s = self.exit_reduction.out_size
        self.exit_conv = SeparableConv(c_exit, c_out)
        if valid_out(s, 7, 2) != 1:  # avgPool 7x7/2 'valid' must leave one position
            raise ValueError(f"input size {size} leaves {s}x{s} features, not 7x7")
        self.fc_age = nn.Linear(c_out, 1)
        self.fc_gender = nn.Linear(c_out, 2)

    def features(self, image):
        x = F.relu(self.conv_in(self.normalize(image)))
        x = self.reduction_block_0(x)
        x = self.reduction_block_1(x)
        for blk in self.main_blocks:
            x = blk(x)
        x = self.exit_reduction(x)
        x = F.relu(self.exit_conv(x))
        return F.avg_pool2d(x, 7, 2).flatten(1)

    def forward(self, image):
        pooled = self.features(image)
        age = self.fc_age(pooled)[:, 0]
        gender = torch.softmax(self.fc_gender(pooled), dim=1)
        return age, gender

    @torch.no_grad()
    def load_tf(self, w):
        if self.channels != list(FACE_ATTRIBUTES_CHANNELS):
            raise ValueError("TF.js weights are for the full-width network")
        self.conv_in.load_tf(w, "entry_flow/conv_in")
        self.reduction_block_0.load_tf(w, "entry_flow/reduction_block_0")
        self.reduction_block_1.load_tf(w, "entry_flow/reduction_block_1")
        for i, blk in enumerate(self.main_blocks):
            blk.load_tf(w, f"middle_flow/main_block_{i}")
        self.exit_reduction.load_tf(w, "exit_flow/reduction_block")
        self.exit_conv.load_tf(w, "exit_flow/separable_conv")
        for name, fc in (("age", self.fc_age), ("gender", self.fc_gender)):
            fc.weight.copy_(torch.from_numpy(w[f"fc/{name}/weights"].T.copy()))
            fc.bias.copy_(torch.from_numpy(w[f"fc/{name}/bias"]))
        return self


# ----------------------------------------------------------------------------- builders
def _check_all_used(module, weights):
    n = sum(1 for _ in module.parameters())
    if len(weights) != n:
        raise ValueError(f"{len(weights)} TF.js weights for {n} module parameters")


def load_face_id(model_dir):
    """FaceIdNet with face-api's `face_recognition_model` weights."""
    w = load_tfjs_weights(Path(model_dir) / "face_recognition_model-weights_manifest.json")
    net = FaceIdNet().load_tf(w)
    _check_all_used(net, w)
    return net.eval().requires_grad_(False)


def load_face_attributes(model_dir):
    """FaceAttributesNet with face-api's `age_gender_model` weights."""
    w = load_tfjs_weights(Path(model_dir) / "age_gender_model-weights_manifest.json")
    net = FaceAttributesNet().load_tf(w)
    _check_all_used(net, w)
    return net.eval().requires_grad_(False)


def judge_input(img, size, fraction=1.0):
    """Renders in [-1, 1] [B, 3, W, W] -> what the face graphs are fed, differentiably:
    RGB 0..255, the centred square of round(fraction * W) px (as `centre_crop_resize` and
    src/faces), bilinearly resized to size x size (no 8-bit rounding: gradients flow)."""
    x = (img.clamp(-1, 1) + 1) * 127.5
    w = x.shape[-1]
    px = min(int(np.floor(fraction * w + 0.5)), w)
    off = (w - px) // 2
    return F.interpolate(x[..., off:off + px, off:off + px], size=(size, size), mode="bilinear",
                         align_corners=False)


def attributes(net, img):
    """Predicted (age, logit of woman) of renders in [-1, 1], fed as the Rust side does
    (the whole crop: `faces.crop.centre_fraction` 1.0)."""
    age, gender = net(judge_input(img, FACE_ATTRIBUTES_SIZE))
    p = gender[:, 1].clamp(1e-6, 1 - 1e-6)
    return age, torch.log(p / (1 - p))


@torch.no_grad()
def randomize(module, seed=0):
    """Deterministic random weights for the tiny test bundle, with outputs of a plausible
    size: descriptors of about unit length, ages around 30 +- 10, unsaturated gender."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if name.endswith("scale_w"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith("scale_b") or p.dim() < 2:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p[0].numel() if name != "fc" else p.shape[0]
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
    module.eval().requires_grad_(False)
    probe = 255.0 * torch.rand(8, 3, module.size, module.size, generator=g)
    if isinstance(module, FaceIdNet):
        d = module(probe)
        module.fc.mul_(1.0 / (d.norm(dim=1).mean() + 1e-12))
    else:
        feats = module.features(probe)
        for fc, target, offset in ((module.fc_age, 10.0, 30.0), (module.fc_gender, 1.0, 0.0)):
            out = fc(feats)
            k = target / (out.std(dim=0).mean() + 1e-12)
            fc.weight.mul_(k)
            fc.bias.copy_(offset - k * (out.mean(dim=0) - fc.bias))
    return module


def tiny_face_id(seed=0, channels=(4, 8, 8, 16)):
    return randomize(FaceIdNet(channels=channels), seed)


def tiny_face_attributes(seed=0, channels=(4, 8, 8, 16, 16)):
    return randomize(FaceAttributesNet(channels=channels), seed + 1)


# ----------------------------------------------------------------------------- the crop
def centre_crop_resize(image_hwc, fraction, size):
    """The crop the Rust side (src/faces.rs) feeds the face graphs: the centred square of
    px = round(fraction * W) pixels of an aligned W x W crop (offset (W - px) // 2), resized
    to size x size, bilinear.

    Bilinear with pixel centres at half-integers (align_corners=False) and clamping at
    the square's edges: output pixel j samples the square at u = (j + 0.5) * px / size - 0.5
    on both axes (what `image`'s Triangle filter does when upsampling; the graphs' inputs
    are larger than 64 px crops, so there is no antialiasing to match). image_hwc:
    [H, W, C] any numeric dtype -> float64 [size, size, C] in the input's value range.
    """
    img = np.asarray(image_hwc, np.float64)
    h, w = img.shape[:2]
    if h != w:
        raise ValueError("aligned crops are square")
    px = min(int(np.floor(fraction * w + 0.5)), w)
    off = (w - px) // 2
    img = img[off:off + px, off:off + px]
    u = np.clip((np.arange(size) + 0.5) * px / size - 0.5, 0.0, px - 1.0)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, px - 1)
    t = u - i0
    rows = img[i0] * (1 - t)[:, None, None] + img[i1] * t[:, None, None]
    return rows[:, i0] * (1 - t)[None, :, None] + rows[:, i1] * t[None, :, None]


def crop_u8(image_hwc, fraction, size):
    """centre_crop_resize rounded to uint8 (what the npm reference is given)."""
    return np.clip(np.rint(centre_crop_resize(image_hwc, fraction, size)), 0, 255).astype(np.uint8)
