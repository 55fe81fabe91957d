"""`latentedit studio`: the editing page, served locally (see latentedit/studio/server.py)."""
import os
import sys

import click

from latentedit.errors import InputError
from latentedit.runtime import set_threads


@click.command()
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Bundle folder (directions, offset networks), rosinality .pt or NVlabs .pkl "
                   "(default: the bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the page to the network.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads for torch; recorded in recipes, which `latentedit replay` runs with the same.")
@click.option("--invert-steps", type=int, default=100, show_default=True,
              help="Projection steps for uploaded images when the bundle has no encoder.")
@click.option("--no-warm", is_flag=True, help="Fit the part clusters on first use instead of at start.")
@click.option("--verbose", is_flag=True, help="Log every request.")
def studio(model_path, host, port, threads, invert_steps, no_warm, verbose):
    """Serve the editing page: seeds, latent files or images in; direction sliders, accessories,
    attribute layers, masks, component transfer; PNG, latents and recipe out."""
    from latentedit.studio.server import Studio, is_loopback, make_server

    set_threads(threads)  # before any model work: bounded, far past the cores OpenMP crashes
    if invert_steps < 1:
        raise InputError("--invert-steps must be >= 1")
    if not 0 <= port < 65536:
        raise InputError(f"--port must be in 0..65535, got {port}")
    app = Studio(model_path, warm=not no_warm, invert_steps=invert_steps)
    try:
        server = make_server(app, host, port, quiet=not verbose)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the page", err=True)
    click.echo(f"latentedit studio: http://{shown}:{bound_port}/  (Ctrl+C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
        if app.warm_thread_alive():
            # The part clusters are still being fitted in a daemon thread: ending the interpreter
            # under running torch code aborts the process, so leave without finalisation.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
