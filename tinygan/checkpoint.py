"""Checkpoints: one .npz file holding everything needed to sample from or resume a run.

Layout (flat names, so ``numpy.load`` shows what is inside):
  generator/<state_dict name>       G's params and buffers ("generator/net.0.weight")
  discriminator/<state_dict name>   D's
  g_opt/<name>, d_opt/<name>        the optimizers' state (moments, step counts)
  meta                              JSON: run configuration, step, epoch, RNG state, history

The file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic), so a crash mid-write never leaves a broken checkpoint.
This module works on the host: arrays are copied off the GPU before saving.
"""

import json
import os
import zipfile

import numpy as np

from tinygan import backend, files

GROUPS = ("generator", "discriminator", "g_opt", "d_opt")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or incomplete."""


def save(path, trainer, meta):
    """Write G, D, both optimizers and ``meta`` (a JSON-able dict) to ``path``."""
    gan = trainer.gan
    states = {
        "generator": gan.generator.state_dict(),
        "discriminator": gan.discriminator.state_dict(),
        "g_opt": trainer.g_opt.state_dict(),
        "d_opt": trainer.d_opt.state_dict(),
    }
    arrays = {f"{group}/{name}": backend.to_host(value)
              for group, state in states.items() for name, value in state.items()}
    meta = dict(meta, rng=backend.get_rng_state(), trainer_step=trainer.step_count)
    save_npz_atomic(path, arrays, meta)


def save_npz_atomic(path, arrays, meta):
    """np.savez of ``arrays`` plus ``meta`` as JSON, to a temporary file renamed into place.

    ``os.replace`` is atomic, so readers see the old file or the new one, never half of one.
    """
    arrays = dict(arrays, meta=np.array(json.dumps(meta)))
    with files.written_atomically(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_npz(path, what):
    """{name: array} of the .npz file at ``path``, read without pickles; a one-line
    CheckpointError naming ``what`` the file should be when it is damaged or not an .npz."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as f:
                return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        # NumPy reads a file that is not a zip archive as a pickle and then advises
        # allow_pickle=True: wrong advice for a file that is not what was expected at all
        reason = "not a zip archive" if "pickled" in str(err) else files.first_line(err)
        raise CheckpointError(f"{what} {path} is not a readable .npz file ({reason})") from None
    # np.load hands back the one array of an .npy file (np.save's) as it is
    raise CheckpointError(f"{what} {path} is not a readable .npz file (it holds one array, "
                          "as np.save writes, not an archive of them)")


def load(path):
    """Read a checkpoint: returns (states: {group: {name: array}}, meta: dict)."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder; expected the .npz file "
                              f"(e.g. {os.path.join(path, 'checkpoint.npz')})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    arrays = read_npz(path, "checkpoint")
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no 'meta' entry: not a tinygan checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: its 'meta' entry is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its 'meta' entry is not a JSON object")
    states = {group: {} for group in GROUPS}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in states:
            kind = meta.get("kind")
            what = f"a {kind} file" if isinstance(kind, str) else "some other .npz file"
            raise CheckpointError(f"checkpoint {path}: unexpected entry {key!r}; this is {what}, "
                                  "not a GAN checkpoint written by tinygan train")
        states[group][name] = value
    return states, meta


RUN_KEYS = ("config", "data_shape", "model_options", "trainer_step")
# what going on with a run needs besides: where it stopped, its random state, its records
RESUME_KEYS = (*RUN_KEYS, "step", "epoch", "time_s", "history", "eval", "rng")


# the JSON type of each meta entry a run writes (a JSON true is a Python int: refused too)
META_TYPES = {"config": (dict,), "data_shape": (list,), "model_options": (dict,),
              "trainer_step": (int,), "step": (int,), "epoch": (int, float),
              "time_s": (int, float), "history": (list,), "eval": (list,), "rng": (dict,),
              "n_samples": (int,), "settings_used": (dict,), "log_every": (int,)}
MODEL_OPTIONS = {"num_classes", "z_dim", "g_dropout"}  # what models.build records


def load_run(path, keys=RUN_KEYS):
    """``load`` for a checkpoint written by a training run (``tinygan train``), whose meta
    also holds the run's settings, data shape and model options (and, to resume it, what
    RESUME_KEYS name)."""
    states, meta = load(path)
    for key in keys:
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} has no {key!r} in its meta: it was not "
                                  "written by a training run")
    for key, kinds in META_TYPES.items():  # a damaged or hand-edited file, named here
        value = meta.get(key)
        if key in meta and (not isinstance(value, kinds) or isinstance(value, bool)):
            expected = " or ".join(kind.__name__ for kind in kinds)
            raise CheckpointError(f"checkpoint {path}: its meta entry {key!r} is "
                                  f"{type(value).__name__}, expected {expected}")
    unknown = sorted(set(meta.get("model_options", {})) - MODEL_OPTIONS)
    if unknown:
        raise CheckpointError(f"checkpoint {path}: unknown model options {unknown} (written by "
                              "a newer tinygan?)")
    return states, meta


def restore(trainer, states, meta):
    """Load saved states into a trainer built from the same configuration.

    All or nothing: each part checks its state before changing anything, and when a
    later part is refused (D's after G's was loaded, say) the earlier ones are put back,
    so the trainer is left as it was."""
    gan = trainer.gan
    parts = [(gan.generator, "generator"), (gan.discriminator, "discriminator"),
             (trainer.g_opt, "g_opt"), (trainer.d_opt, "d_opt")]
    loaded = []  # (part, its state before) for the parts changed so far
    try:
        for part, group in parts:
            before = {k: v.copy() if hasattr(v, "copy") else v
                      for k, v in part.state_dict().items()}
            part.load_state_dict(states[group])
            loaded.append((part, before))
        try:
            backend.set_rng_state(meta["rng"])
        except (KeyError, TypeError, ValueError):  # not the dict get_rng_state wrote
            raise CheckpointError("the checkpoint's random state (meta 'rng') is not one "
                                  "tinygan saved") from None
    except Exception:
        for part, before in loaded:
            part.load_state_dict(before)
        raise
    trainer.step_count = meta["trainer_step"]
