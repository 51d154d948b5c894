"""Time of each visualisation on resnet50 / vit_b_16 / swin_t at 224 on this machine's CPU, and of the channel
paths of wide blocks (target: Grad-CAM++ on resnet50 under 2 s). Model build excluded; first call and warm median."""
import torch

from benchmarks.common import print_table, timed
from explorer.images import load_image, sample_images, to_input
from explorer.models import build_model
from explorer.spec import ModelSpec
from explorer.views.attention import attention_maps
from explorer.views.cam import compute_cam
from explorer.views.connectivity import channel_paths
from explorer.views.deformable import capture_offsets
from explorer.views.receptive_field import effective_rf, theoretical_rf
from explorer.views.swin import swin_masks_for


def main():
    image, _ = load_image(sample_images()["shapes"])
    x = to_input(image, (3, 224, 224))
    models = {name: build_model(ModelSpec(name), "cpu") for name in ("resnet50", "vit_b_16", "swin_t")}
    dcn = build_model(ModelSpec("resnet50", swaps=("preset:dcnv2",)), "cpu")
    igcv2 = build_model(ModelSpec("resnet50", swaps=("preset:igcv2",)), "cpu")
    igcv1 = build_model(ModelSpec("igcv1"), "cpu")
    jobs = [
        ("resnet50", "Grad-CAM++ (layer4)", lambda: compute_cam(models["resnet50"], x, "gradcam++")),
        ("resnet50", "theoretical receptive fields (fx)", lambda: theoretical_rf(models["resnet50"], (3, 224, 224))),
        ("resnet50", "effective receptive field of layer3", lambda: effective_rf(models["resnet50"], (3, 224, 224), "layer3")),
        ("resnet50 + DCNv2", "deformable offsets of 13 layers", lambda: capture_offsets(dcn, x)),
        ("vit_b_16", "attention maps, 12 layers × 12 heads", lambda: attention_maps(models["vit_b_16"], x, keep_output=False)),
        ("vit_b_16", "Eigen-CAM (token reshape derived)", lambda: compute_cam(models["vit_b_16"], x, "eigencam")),
        ("swin_t", "shifted-window masks, stage 1 block 1", lambda: swin_masks_for(models["swin_t"], (224, 224), 1, 1)),
        ("swin_t", "attention maps, all window layers", lambda: attention_maps(models["swin_t"], x, keep_output=False)),
        ("swin_t", "Grad-CAM++ (last norm1)", lambda: compute_cam(models["swin_t"], x, "gradcam++")),
        ("resnet50 + IGCV2", "channel paths of layer4.0 (1024 → 2048)", lambda: channel_paths(igcv2, "layer4.0")),
        ("igcv1", "channel paths of stage4.block2 (1600 channels)", lambda: channel_paths(igcv1, "stage4.block2")),
    ]
    rows = []
    for model, view, job in jobs:
        first, median = timed(job, repeats=3)
        rows.append([model, view, f"{first:.2f}", f"{median:.2f}"])
    print_table(f"Views at 224 on the CPU ({torch.get_num_threads()} threads), seconds",
                ["model", "view", "first call", "median of 3"], rows)


if __name__ == "__main__":
    main()
