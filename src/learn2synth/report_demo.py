"""Reports that rebuild finished runs from their checkpoints: the demo's figures (learned parameters over steps,
loss curves, a gallery with predictions) and the learned synthesis priors of a run (:func:`report_run`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .runlog import series as _series


def demo_figures(folder: Path, l2s_cfg, base_cfg, hidden: dict) -> dict[str, Path]:
    from .report import save_curves, save_gallery
    from .train import restore, setup

    runs = folder / "runs"
    figures = {}
    params = ["noise.sigma", "bias.low", "bias.middle", "bias.high"]
    truth = {"noise.sigma": hidden["sigma"], **dict(zip(params[1:], hidden["bias"], strict=True))}
    figures["learned parameters"] = save_curves(
        folder / "learned_parameters.png", _series(runs / "learn2synth" / "metrics.csv", params),
        title="learned augmentation parameters (dashed: hidden truth)", truth=truth)
    losses = {f"learn2synth {k}": v for k, v in
              _series(runs / "learn2synth" / "metrics.csv", ["loss_synth", "loss_real"]).items()}
    losses["synthseg loss_synth"] = _series(runs / "synthseg" / "metrics.csv", ["loss_synth"])["loss_synth"]
    figures["losses"] = save_curves(folder / "losses.png", losses, title="training losses", logy=True)

    predictions = {}
    for name, cfg in (("learn2synth", l2s_cfg), ("synthseg", base_cfg)):
        run, test = setup(cfg)
        restore(run, sorted((runs / name).glob("step_*.pt"))[-1])
        x = torch.stack(test.images[:6]).to(run.device)
        with torch.no_grad():
            predictions[f"{name} prediction"] = list(run.logits(run.params, x).argmax(1, keepdim=True).cpu())
        if name == "learn2synth":
            g = torch.Generator(device=run.device).manual_seed(0)
            synthetic, target = run.synth_batch(6)
            with torch.no_grad():
                augmented = run.augmenter(synthetic, g)
            real, real_labels = list(x.cpu()), [y for y in test.labels[:6]]
    figures["gallery"] = save_gallery(folder / "gallery.png", {
        "synthetic (fixed synthesis)": list(synthetic.cpu()),
        "augmented (learned)": list(augmented.cpu()),
        "real (held out)": real,
    }, labels=None, predictions={"real labels": real_labels, **predictions})
    return figures


def report_run(run_folder: str | Path) -> list[dict]:
    """Rebuild a finished run from its newest checkpoint, write its report, print and return the table."""
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .config import from_dict
    from .report_priors import format_table, intensity_class_names, priors_table, write_priors_report
    from .train import restore, setup
    from .train_config import TrainConfig

    path = resolve_checkpoint(run_folder)
    config = from_dict(TrainConfig, load_checkpoint(path)["config"])
    run, _ = setup(config, init=False)
    restore(run, path)
    write_priors_report(run, Path(run_folder))
    rows = priors_table(run_folder, intensity_class_names(run.synth, config.data.label_mapping))
    print(format_table(rows), end="")
    return rows
