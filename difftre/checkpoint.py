"""Checkpoints as .npz archives (no pickle) written atomically.

Everything is a named array: pytrees are stored as their flattened leaves
(``params/0``, ``params/1``, ...) and restored into the structure of a template
(the same model and optimiser built fresh), plain values in a JSON string
``meta``. The file is written beside its destination, flushed to disk and
renamed over it (``os.replace`` is atomic on POSIX), so a process killed at
any moment leaves the previous checkpoint intact.
"""
import json
import os
import tempfile

import jax
import numpy as np


def save(path, trees, arrays, meta):
    """Write trees (name -> pytree), arrays (name -> array) and meta (JSON-able dict) to path atomically."""
    payload = {"meta": np.array(json.dumps(meta))}
    for name, tree in trees.items():
        for k, leaf in enumerate(jax.tree.leaves(tree)):
            payload[f"{name}/{k}"] = np.asarray(leaf)
    for name, array in arrays.items():
        payload[name] = np.asarray(array)
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".npz")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load(path, templates):
    """(trees, arrays, meta) from path; trees rebuilt in the structure of templates (name -> pytree)."""
    with np.load(path, allow_pickle=False) as data:
        contents = {key: data[key] for key in data.files}
    meta = json.loads(str(contents.pop("meta")))
    trees = {}
    for name, template in templates.items():
        leaves, treedef = jax.tree.flatten(template)
        stored = [contents.pop(f"{name}/{k}") for k in range(len(leaves))]
        for k, (old, new) in enumerate(zip(leaves, stored)):
            if np.shape(old) != new.shape:
                raise ValueError(f"checkpoint {path}: {name}/{k} has shape {new.shape}, expected {np.shape(old)}")
        trees[name] = jax.tree.unflatten(treedef, [jax.numpy.asarray(x, dtype=np.asarray(old).dtype)
                                                  for x, old in zip(stored, leaves)])
    return trees, contents, meta
