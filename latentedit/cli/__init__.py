"""The `latentedit` command line: one module per verb group, each thin over the Python API."""
import sys

import click

from latentedit.errors import LatentEditError


def _os_error_line(e):
    """The path and the OS's reason; a file where a folder is needed (an --out or DST that is a file,
    or inside one: the OS says only "File exists" / "Not a directory") is named as such."""
    path = e.filename or ""
    if path and isinstance(e, (FileExistsError, NotADirectoryError)):
        from pathlib import Path

        blocking = next((p for p in (Path(path), *Path(path).parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return f"{path}: " + ("" if str(blocking) == str(path) else f"{blocking} ") + "is a file, not a folder"
    return f"{path}: {e.strerror or e}".lstrip(": ")


class _Main(click.Group):
    """Turns library errors into one clear line and exit status 2, never a traceback; click's own
    usage errors (unknown option, bad value) too, instead of its usage block."""

    def main(self, *args, standalone_mode=True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a group called without a command: its help
                click.echo(e.format_message(), err=True)
                sys.exit(2)
            where = e.ctx.command_path if e.ctx is not None else "latentedit"
            click.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.exceptions.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LatentEditError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # unwritable --out, full disk, ...: the OS's reason and the path
            click.echo(f"error: {_os_error_line(e)}", err=True)
            sys.exit(2)
        except MemoryError:
            click.echo("error: out of memory (the input or model is larger than this machine can hold)", err=True)
            sys.exit(2)


@click.group(cls=_Main)
@click.version_option(package_name="latentedit")
def main():
    """StyleGAN2 latent-space editing."""


def _register():
    from latentedit.cli import edit, evaluate, invert, models, regions, synthesize, train, train_evaluators, world
    from latentedit.cli import recipe, studio

    main.add_command(models.generate)
    main.add_command(models.info)
    main.add_command(models.convert)
    main.add_command(world.world)
    main.add_command(train.train)
    train.train.add_command(train_evaluators.evaluators)
    main.add_command(evaluate.evaluate)
    main.add_command(edit.boundary)
    main.add_command(edit.edit)
    main.add_command(invert.invert)
    main.add_command(synthesize.synthesize)
    main.add_command(regions.mask)
    main.add_command(regions.transfer)
    main.add_command(regions.layers)
    main.add_command(studio.studio)
    main.add_command(recipe.replay)


_register()
