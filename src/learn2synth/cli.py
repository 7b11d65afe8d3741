"""Command line: ``learn2synth synth | train | adapt | demo | predict | evaluate | segment | gan | labelgen | spade``.

Heavy imports (torch, nibabel, matplotlib) happen inside the commands so ``--help`` is instant. Errors a user
can fix print one line on stderr and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time

from .cli_args import add_common as _add_common
from .cli_args import add_run_arguments, add_threads, run_summary, threads_set
from .errors import Learn2SynthError


def _synth_parser(sub) -> None:
    p = sub.add_parser("synth", help="generate synthetic image/label pairs from label maps",
                       description="Generate N synthetic image/label pairs from label maps (or procedural phantoms) "
                                   "and a gallery.png. Outputs use the input's format; NIfTI keeps the affine.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help="label map file, folder or glob (NIfTI/MGZ/PNG/TIFF/NPZ)")
    src.add_argument("--phantom", choices=["2d", "3d"], help="use procedural brain-like label maps instead")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--preset", default="synthseg", help="synthesis preset: synthseg, mild, none")
    p.add_argument("--config", help="YAML file overriding the preset: a synthesis YAML, or a training config, "
                                    "whose synth section and label mapping are used (labels are then written "
                                    "as its classes, already mapped)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one synthesis setting, without a 'synth.' prefix even with a training config, "
                        "e.g. --set noise.enabled=true or --set strip.enabled=false (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shape", type=int, nargs="+", help="phantom size (default 192 192 in 2D, 96 96 96 in 3D)")
    p.add_argument("--n-labels", type=int, default=8, help="phantom labels including background (default 8)")
    p.add_argument("--device", default="cpu")
    _add_common(p)
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from .synth_cmd import run_synth

    return run_synth(args)


def _train_parser(sub) -> None:
    from .methods import METHODS  # names only: no method module is imported

    p = sub.add_parser("train", help=f"train a segmenter with one method ({', '.join(METHODS)})",
                       description="Train from a YAML config (see configs/). Writes checkpoints, metrics.csv and "
                                   "TensorBoard logs to --out; --resume continues from the newest checkpoint.")
    add_run_arguments(p, "YAML config (e.g. configs/learn2synth.yaml); defaults apply without one", "optim.lr=1e-3")
    add_threads(p)
    _add_common(p)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    started = time.perf_counter()
    from .train import check_run_folder, train
    from .train_config import load_train_config

    config = load_train_config(args.config, threads_set(args))
    out = check_run_folder(args.out, args.resume)
    metrics = train(config, out, resume=args.resume, progress=not args.quiet)
    print(f"{config.method}: {run_summary(metrics, started)}; checkpoints and metrics.csv in {out}")
    return 0


def _adapt_parser(sub) -> None:
    from .segment import SHIPPED_VIEWS

    p = sub.add_parser("adapt", help="continue training a model with learn2synth on a few real labeled examples",
                       description="Continue training MODEL (default: the shipped coronal brain model) with method "
                                   "learn2synth on the real labeled examples of --real: the run starts from the "
                                   "model's weights and its training's synthesis and data settings, learns the "
                                   "synthesis priors from the real examples (500 steps, debiased hypergradient, a "
                                   "quarter of the real subjects held out to check the augmenter), then --config and "
                                   "--set override. --out is an ordinary run folder: use it with predict/segment "
                                   "--model; --resume continues it. segment averages three views: to keep that, "
                                   "adapt each (--view coronal, axial, sagittal; three --out) and give segment the "
                                   "three runs, one --model each.")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--model", help="checkpoint or run folder (default: the shipped coronal brain tissue model)")
    start.add_argument("--view", choices=list(SHIPPED_VIEWS), default="coronal",
                       help="which shipped brain tissue model to start from (default coronal)")
    p.add_argument("--real", required=True, metavar="DIR_OR_MANIFEST",
                   help="real labeled examples: a folder with images/ and labels/, or a manifest (YAML/CSV)")
    add_run_arguments(p, "YAML overriding the adapt settings", "steps=200")
    add_threads(p)
    _add_common(p)
    p.set_defaults(func=_run_adapt)


def _run_adapt(args) -> int:
    from .adapt import run_adapt

    return run_adapt(args)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: learn the synthesis on procedural phantoms",
                       description="Learn2Synth parameter recovery on procedural phantoms: learns a hidden noise "
                                   "level and bias field from a few 'real' images and compares with SynthSeg-style "
                                   "training. Writes results.json, report.md and plots.")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--quick", action="store_true", help="a short run for smoke tests (under 2 minutes)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds: --seed, --seed + 1, ... (default 3); the "
                                                        "table shows the learned values' spread over them")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one process and torch thread each "
                                                       "(default 2; 1: in this process, 2 threads)")
    _add_common(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment images with a trained model",
                       description="Segment a NIfTI/MGZ volume, a 2D image (PNG, TIFF, NIfTI slice), a TIFF stack, a "
                                   "folder or a glob with a checkpoint of 'learn2synth train'. 2D models go slice by "
                                   "slice, 3D models by sliding window; images are normalized as in training. Each "
                                   "output has the input's name, format and geometry, and holds the training label "
                                   "values. Existing files are never overwritten; bad files are listed at the end "
                                   "(exit code 2) while the others are still segmented.")
    p.add_argument("--model", required=True, action="append",
                   help="checkpoint (step_*.pt) or run folder (its newest checkpoint); repeat it to average the "
                        "probabilities of several models (e.g. 2D models of different slice axes)")
    p.add_argument("--in", dest="input", required=True, metavar="PATH", help="image file, folder or glob")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--posteriors", action="store_true",
                   help="also write class probabilities, <name>_posteriors (NIfTI for PNG/TIFF inputs)")
    p.add_argument("--batch-size", type=int, default=8, help="slices (2D) or windows (3D) per pass (default 8)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--label-mapping",
                   help="label mapping YAML of the real labels (values -> classes): classes are written as the "
                        "values it maps to them, instead of the values the model records")
    p.add_argument("--class-indices", action="store_true",
                   help="write class indices 0..n-1 instead of the label values the model was trained for")
    p.add_argument("--mirror", action="store_true",
                   help="scans only: also segment the scan mirrored left-right and average (twice the passes, none "
                        "more for a model slicing along the left-right axis; needs a model trained with "
                        "data.orientation)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy: all cores less "
                                               "the 1-minute load average, at least 1; OMP_NUM_THREADS if set)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from .inference import run_predict

    return run_predict(args)


def _segment_parser(sub) -> None:
    p = sub.add_parser("segment", help="segment brain tissue in any 3D scan (shipped models; any contrast)",
                       description="Segment 4 brain tissue classes (1 cortex, 2 subcortical grey matter, 3 white "
                                   "matter, 4 CSF; 0 background, the values of OASIS seg4) in NIfTI/MGZ scans of any "
                                   "orientation, voxel size and MRI contrast, skull-stripped or not, with the three "
                                   "2D models shipped in the package (coronal, axial, sagittal, averaged; trained on "
                                   "synthetic images only) or --model, the probabilities then refined by the scan's "
                                   "own tissue intensities. Outputs "
                                   "keep each input's grid, affine and header. Like mri_synthseg.")
    p.add_argument("input", help="a 3D scan (NIfTI/MGZ) or a folder of them")
    p.add_argument("--out", required=True,
                   help="output label map (when INPUT is a file and this has an image extension) or folder")
    p.add_argument("--vol", help="also write a CSV of the volume (mm^3) of each tissue class in each scan")
    p.add_argument("--posteriors", action="store_true",
                   help="also write class probabilities, <name>_posteriors (one channel per class, in label order)")
    p.add_argument("--model", action="append",
                   help="checkpoint or run folder; repeat it to average several models' probabilities (default: the "
                        "shipped brain tissue models, one per view)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="segment each scan once; by default it is also segmented mirrored left-right and the two "
                        "are averaged (more accurate; with the shipped models five network passes instead of three)")
    p.add_argument("--no-refine", dest="refine", action="store_false",
                   help="keep the network's probabilities as they are; by default they are refined by the scan's own "
                        "tissue intensities (a Gaussian per class fitted to the scan, the network as prior; "
                        "about 2 s per scan)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy: all cores less "
                                               "the 1-minute load average, at least 1; OMP_NUM_THREADS if set)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_run_segment)


def _run_segment(args) -> int:
    from .segment import run_segment

    return run_segment(args)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score predictions against references (Dice, HD95, ASSD); compare two sets",
                       description="Pair prediction and reference label maps by file name (without extension) and "
                                   "score each case as a whole: every label over the whole file (a 3D volume as one "
                                   "volume, as SynthSeg and Learn2Synth report it): Dice, HD95 and ASSD (physical "
                                   "units, spacing of the reference), plus each case's mean over the scored labels "
                                   "(label 'mean'). Prints a summary over the cases (n, mean, sd, median per label; "
                                   "sd '-' when n < 2); --out writes metrics_per_case.csv, summary.csv and "
                                   "summary.md. --per-slice AXIS adds per-slice Dice from the volumes (per_slice*.csv, "
                                   "per_slice.md). --compare A B adds a paired Wilcoxon test and Cohen's d of B - A "
                                   "per label and for the mean (comparison.csv/.md), over volumes or, with "
                                   "--per-slice, over slices, and with --out box plots. Empty structures: in neither "
                                   "map -> NaN (left out); in one only -> Dice 0, distances inf (left out of "
                                   "distance summaries, counted in n_inf). A prediction none of whose labels is a "
                                   "reference label is refused.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="folder of predicted label maps, or one file (then --ref is one file too: "
                                    "one case, whatever the two names)")
    src.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), help="two folders of predictions to compare")
    p.add_argument("--ref", required=True, help="folder of reference label maps, or one file")
    p.add_argument("--labels", help="labels to score, e.g. 1,2,3 (default: every non-zero value in the references)")
    p.add_argument("--mask", metavar="DIR_OR_FILE",
                   help="score only inside a mask (non-zero voxels; e.g. field of view or brain mask): a folder of "
                        "masks paired by name like the references, or one file for every case; voxels outside are "
                        "background in both prediction and reference")
    p.add_argument("--per-slice", type=int, metavar="AXIS",
                   help="also per-slice Dice along this array axis (0-2): per label, averaged over the slices where "
                        "the reference holds it; slices where only the prediction holds it are counted apart "
                        "(fp_slices). With --compare, the test is over these slices (more units than a few "
                        "subjects, though slices of one volume are not independent)")
    p.add_argument("--no-distances", action="store_true",
                   help="Dice only: skip HD95 and ASSD (they add some 10-20 s per 160x192x224 brain with 4 labels)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own setting)")
    p.add_argument("--out", help="folder for the tables and plots (created if needed; nothing is overwritten)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from .evaluate import run_evaluate

    return run_evaluate(args)


def _gan_parser(sub) -> None:
    p = sub.add_parser("gan", help="train or sample the label-to-image GAN of method gan_synth",
                       description="The pix2pix label-to-image GAN of method gan_synth on its own: 'train' runs its "
                                   "GAN phase (gan.pretrain_steps) into a run folder; 'sample' renders label maps "
                                   "with a run's generator.")
    gan = p.add_subparsers(dest="gan_command", required=True)
    t = gan.add_parser("train", help="train the GAN on real labeled pairs (the GAN phase of gan_synth)")
    add_run_arguments(t, "YAML config (e.g. configs/gan_synth.yaml); method is set to gan_synth",
                      "gan.pretrain_steps=200")
    _add_common(t)
    t.set_defaults(func=_run_gan, command="gan train")
    s = gan.add_parser("sample", help="render label maps with a trained generator; writes pairs and gallery.png")
    s.add_argument("--model", required=True, help="run folder or checkpoint of 'gan train' or method gan_synth")
    s.add_argument("--labels", required=True, metavar="DIR_OR_FILE",
                   help="label map file, folder or glob; or a folder with images/ and labels/ (real pairs: the "
                        "gallery shows the real image too)")
    s.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    s.add_argument("--n", type=int, default=8, help="number of samples, spread over the inputs (default 8)")
    s.add_argument("--seed", type=int, default=0, help="seed of the generator's noise")
    _add_common(s)
    s.set_defaults(func=_run_gan, command="gan sample")


def _run_gan(args) -> int:
    from .gan_cmd import run_gan_sample, run_gan_train

    return run_gan_train(args) if args.gan_command == "train" else run_gan_sample(args)


class _OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the command and the problem, exit code 2 (argparse prints the usage
    block first, which buries the problem); ``--help`` still shows everything. Subcommands inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="learn2synth", description=__doc__.splitlines()[0].replace("``", ""))
    from . import __version__

    parser.add_argument("--version", action="version", version=f"learn2synth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _synth_parser(sub)
    _train_parser(sub)
    _adapt_parser(sub)
    _demo_parser(sub)
    _predict_parser(sub)
    _evaluate_parser(sub)
    _segment_parser(sub)
    _gan_parser(sub)
    from .generative_cmd import add_generator_parsers  # light: argparse only

    add_generator_parsers(sub)
    return parser


def _innermost(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command parser of a command line: ``learn2synth gan train``'s for ``gan train ...``."""
    for token in argv:
        if parser._subparsers is None:  # argparse keeps its subcommand table there (stable since 3.2)
            break
        choices = parser._subparsers._group_actions[0].choices
        if token not in choices:
            break
        parser = choices[token]
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand that got them (argparse reports them at the top level)
        command = _innermost(parser, list(sys.argv[1:] if argv is None else argv))
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except Learn2SynthError as e:
        if args.debug:
            raise
        command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        print(f"learn2synth {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"learn2synth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
