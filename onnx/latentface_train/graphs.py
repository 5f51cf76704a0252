"""The modules that become the bundle's ONNX graphs (contract: onnx/BUNDLE.md).

Each wrapper fixes the graph's inputs and outputs; the `*Grad` ones return the
per-sample loss, its gradient with respect to the latent, and the image, computed by
`torch.func.grad` so that the traced graph holds the backward pass as plain ops.
"""
import torch
import torch.nn as nn


def reconstruction_loss(image, target, mask, weights, lpips):
    """Per-sample loss [B]: masked pixel MSE + LPIPS on the masked composite (BUNDLE.md)."""
    diff = (image - target) * mask
    mse = (diff * diff).sum(dim=[1, 2, 3]) / (3.0 * mask.sum(dim=[1, 2, 3]) + 1e-8)
    loss = weights[:, 0] * mse
    if lpips is not None:
        composite = mask * image + (1.0 - mask) * target
        loss = loss + weights[:, 1] * lpips(composite, target)
    return loss


class MappingGraph(nn.Module):
    def __init__(self, mapping):
        super().__init__()
        self.mapping = mapping

    def forward(self, z):
        return self.mapping(z)


class SynthesisGraph(nn.Module):
    def __init__(self, synthesis):
        super().__init__()
        self.synthesis = synthesis

    def forward(self, ws, *noise):
        return self.synthesis(ws, list(noise))


class SynthesisGradGraph(nn.Module):
    def __init__(self, synthesis, lpips):
        super().__init__()
        self.synthesis = synthesis
        self.lpips = lpips

    def forward(self, ws, target, mask, weights, *noise):
        def loss_fn(ws_):
            img = self.synthesis(ws_, list(noise))
            loss = reconstruction_loss(img, target, mask, weights, self.lpips)
            return loss.sum(), (loss, img)

        grad, (loss, img) = torch.func.grad(loss_fn, has_aux=True)(ws)
        return loss, grad, img


class EncoderGraph(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, image):
        return self.encoder(image)


class VaeEncoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image)


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z)


class VaeDecoderGradGraph(nn.Module):
    def __init__(self, vae, lpips):
        super().__init__()
        self.vae = vae
        self.lpips = lpips

    def forward(self, z, target, mask, weights):
        def loss_fn(z_):
            img = self.vae.decode(z_)
            loss = reconstruction_loss(img, target, mask, weights, self.lpips)
            return loss.sum(), (loss, img)

        grad, (loss, img) = torch.func.grad(loss_fn, has_aux=True)(z)
        return loss, grad, img


class LpipsGraph(nn.Module):
    def __init__(self, lpips):
        super().__init__()
        self.lpips = lpips

    def forward(self, a, b):
        return self.lpips(a, b)
