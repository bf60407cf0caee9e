"""Minion keys made and accepted without a running master (``salt-key --gen-keys``, ``salt-key -a``).

For runs with many minion ids: each id's RSA key pair is generated once, its
public half is placed where an accepted key lives on the master, and each
sender (or real minion) gets a ``pki_dir`` holding the pair.
"""

import pathlib
import shutil


def generate_keys(key_dir, ids, keysize=2048):
    """<key_dir>/<id>.pem and .pub for every id (kept if they exist)."""
    import salt.crypt

    key_dir = pathlib.Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    for mid in ids:
        pem, pub = key_dir / f"{mid}.pem", key_dir / f"{mid}.pub"
        if pem.exists() and pub.exists():
            continue
        priv_pem, pub_pem = salt.crypt.gen_keys(keysize)
        pem.write_text(priv_pem)
        pem.chmod(0o400)
        pub.write_text(pub_pem)


def accept_keys(master_pki, key_dir, ids):
    """Pre-accept: each id's public key at ``<master pki_dir>/minions/<id>``, as ``salt-key -a`` leaves it."""
    accepted = pathlib.Path(master_pki, "minions")
    accepted.mkdir(parents=True, exist_ok=True)
    for sub in ("minions_pre", "minions_rejected", "minions_denied"):
        pathlib.Path(master_pki, sub).mkdir(parents=True, exist_ok=True)
    for mid in ids:
        shutil.copyfile(pathlib.Path(key_dir, f"{mid}.pub"), accepted / mid)


def minion_pki(base, key_dir, mid):
    """A minion ``pki_dir`` (``<base>/<id>``) holding minion.pem/minion.pub; the master's key is cached there at sign-in."""
    pki = pathlib.Path(base, mid)
    pki.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pathlib.Path(key_dir, f"{mid}.pem"), pki / "minion.pem")
    (pki / "minion.pem").chmod(0o400)
    shutil.copyfile(pathlib.Path(key_dir, f"{mid}.pub"), pki / "minion.pub")
    return pki
