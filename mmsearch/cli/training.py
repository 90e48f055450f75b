"""Commands that fit the audio tower: train-audio and fit-clap-bridge."""
from __future__ import annotations


import click


from .app import Context, cli, command


@cli.command("train-audio")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", "train_batch", type=click.IntRange(2), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=0.2, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=10, show_default=True,
              help="Stop after this many epochs without a better held-out score: audio→text R@1 plus "
                   "text→audio R-precision (ties: R@5, then loss).")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), help="Stop after this many seconds.")
@click.option("--output", type=click.Path(dir_okay=False), help="Checkpoint file (default: in the data dir).")
@click.option("--fresh", is_flag=True, help="Start a new run even where the last one was interrupted (Ctrl-C, "
              "a crash), instead of resuming it; a run that finished (its epochs, early stopping or --time-limit) "
              "is never resumed. Either way training starts from the data dir's current tower, teaching it "
              "more sounds.")
@command
def train_audio(ctx: Context, manifest: str, epochs: int, train_batch: int, lr: float, val_fraction: float,
                patience: int, time_limit: float | None, output: str | None, fresh: bool) -> None:
    """Teach the audio tower sounds from a CSV of audio,caption[,image] pairs; it becomes the data dir's tower.

    A fraction of the recordings (--val-fraction, per caption) is held out; every epoch prints their
    audio→text R@1/R@5 against the held-out split's distinct captions next to chance and each caption's
    text→audio R-precision; the epoch with the best R@1 plus text→audio R-precision is kept (ties: R@5,
    then loss), and a warning says when its R@1 is within 2x chance. An interrupted run resumes. Training
    contrasts sounds with captions as seen from the captions' mean (so captions that differ by one word
    still pull apart), over batches that cycle through the captions, on randomly altered sounds (level,
    position, speed, noise, masked spectrogram bands)."""
    from mmsearch.encoders.audio_training import TrainOptions
    library = ctx.library()
    options = TrainOptions(epochs=epochs, batch_size=train_batch, lr=lr, val_fraction=val_fraction,
                           patience=patience, time_limit=time_limit, resume=not fresh,
                           max_seconds=min(30.0, library.settings.max_audio_seconds))
    report = library.train_audio(manifest, options, output, log=lambda line: click.echo(line, err=True))
    document = {"checkpoint": report.checkpoint, "best_epoch": report.best_epoch, "val_r1": report.best_r1,
                "val_r5": report.best_r5, "chance_r1": report.chance_r1, "chance_r5": report.chance_r5,
                "val_captions": report.val_captions, "train_pairs": report.train_pairs, "val_pairs": report.val_pairs,
                "epochs": len(report.epochs), "stopped": report.stopped, "warning": report.warning,
                "history": [{"epoch": e.epoch, "loss": e.loss, "val_r1": e.val_r1, "val_r5": e.val_r5}
                            for e in report.epochs]}
    ctx.emit(document, lambda d: f"saved {d['checkpoint']} (epoch {d['best_epoch']}: held-out audio→text R@1 "
             f"{d['val_r1']:.3f} (chance {d['chance_r1']:.3f}), R@5 {d['val_r5']:.3f} (chance {d['chance_r5']:.3f}) "
             f"over {d['val_captions']} captions); run 'index' to re-embed sounds with it")


@cli.command("fit-clap-bridge")
@click.argument("clap_checkpoint", type=click.Path(dir_okay=False))
@click.argument("captions", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["procrustes", "lstsq"]), default="procrustes", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Bridge file (default: in the data dir).")
@command
def fit_clap_bridge(ctx: Context, clap_checkpoint: str, captions: str, method: str, output: str | None) -> None:
    """Use a LAION-CLAP checkpoint as the audio tower, mapped into this data dir's space by a linear map
    fitted on CAPTIONS (a text file, one caption per line). Needs: pip install 'mmsearch[clap]'."""
    document = ctx.library().fit_clap_bridge(clap_checkpoint, captions, method, output)
    ctx.emit(document, lambda d: f"saved {d['bridge']}: {d['captions']} captions, held-out text R@1 "
             f"{d['heldout_text_r1']:.3f}; run 'index' to re-embed sounds through CLAP")
