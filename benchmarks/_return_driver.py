"""Minion-side driver for ``benchmarks/headline.py``: job returns through Salt's own channel.

Each sender process (``multiprocessing`` spawn context, so nothing Salt opened in
the parent is inherited) holds one ``salt.channel.client.AsyncReqChannel`` per
minion id, made with ``AsyncReqChannel.factory(minion_opts, crypt="aes")`` from a
``salt.config.minion_config`` with that id, its own ``pki_dir`` (the minion's
RSA key pair, whose public half the benchmark placed in the master's
``pki/minions/<id>``) and ``master_uri`` = the master's ret_port. The channel
signs in like a minion (``AsyncAuth``), then every ``send`` is a real AES
request the master decrypts, checks (token, id) and hands to
``AESFuncs._return`` -> ``salt.utils.job.store_job`` -> the job cache.

Loads are the ones ``salt/minion.py: _return_pub`` builds for a plain minion
return: ``{"cmd": "_return", "id", "jid", "fun", "fun_args", "return",
"retcode", "success"}`` (+ ``"out": "highstate"`` for the state payload), to
which the channel adds ``nonce``, ``ts`` and ``tok``.

Concurrency: ``channels_per_minion`` channels per minion id (they share the id's
``AsyncAuth``, so one sign-in), one coroutine per channel sending its share of
the sender's returns one after the other (a channel serialises its requests, as
a minion's does), so a sender keeps ``minions x channels_per_minion`` requests
in flight. A request is
sent once (``request_channel_tries: 1``, long timeout): a retry would send the
same return twice and blur the lost/doubled count; a timeout counts as failed.
"""

import asyncio
import os
import pathlib
import resource
import time

from tests.support.salt_keys import minion_pki


def minion_ids(count):
    return [f"hl-minion-{i:03d}" for i in range(count)]


def state_return(kb=20, states=20):
    """A ``state.apply``-like return: ``states`` file.managed results, about ``kb`` KB as msgpack."""
    per_state = max(200, kb * 1024 // states)
    ret = {}
    for i in range(states):
        name = f"/etc/bench/app{i:02d}/settings.conf"
        diff_lines = [f"--- \n+++ \n@@ -{i},7 +{i},7 @@"]
        line = 0
        while sum(len(part) + 1 for part in diff_lines) < per_state - 360:
            diff_lines.append(f"-option_{line:03d} = old value {i}-{line}\n+option_{line:03d} = new value {i}-{line}")
            line += 1
        ret[f"file_|-app{i:02d}_settings_|-{name}_|-managed"] = {
            "name": name,
            "changes": {"diff": "\n".join(diff_lines)},
            "result": True,
            "comment": f"File {name} updated",
            "__sls__": f"app{i:02d}",
            "__run_num__": i,
            "start_time": f"12:00:{i:02d}.123456",
            "duration": 12.345 + i,
            "__id__": f"app{i:02d}_settings",
        }
    return ret


def make_load(payload, jid, mid, state_ret=None):
    if payload == "ping":
        return {"cmd": "_return", "id": mid, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0, "success": True}
    return {
        "cmd": "_return",
        "id": mid,
        "jid": jid,
        "fun": "state.apply",
        "fun_args": [],
        "return": state_ret,
        "retcode": 0,
        "success": True,
        "out": "highstate",
    }


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sender_main(conn, spec):
    """Entry point of a sender process; talks to the parent over ``conn`` (a Pipe end).

    ``spec``: {index, ids, key_dir, pki_base, cachedir, ret_port, state_kb, timeout}.
    """
    try:
        asyncio.run(_sender(conn, spec))
    except Exception as err:  # told to the parent, which reports the run as failed
        conn.send({"fatal": f"{type(err).__name__}: {err}"})
        raise


async def _sender(conn, spec):
    import salt.config

    from salt_engine_lib import saltcompat

    setup_started = time.monotonic()
    loop = asyncio.get_running_loop()
    master_uri = f"tcp://127.0.0.1:{spec['ret_port']}"
    channels = {}
    for mid in spec["ids"]:
        pki = minion_pki(spec["pki_base"], spec["key_dir"], mid)
        opts = salt.config.minion_config(None)
        opts.update(
            {
                "id": mid,
                "pki_dir": str(pki),
                "master": "127.0.0.1",
                "master_ip": "127.0.0.1",
                "master_port": spec["ret_port"],
                "master_uri": master_uri,
                "cachedir": str(pathlib.Path(spec["cachedir"], mid)),
                "sock_dir": str(pathlib.Path(spec["cachedir"], mid, "sock")),
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 2,
                "auth_tries": 30,
                "auth_timeout": 60,
                "request_channel_tries": 1,
                "request_channel_timeout": spec["timeout"],
            }
        )
        # Extra channels of one id share its AsyncAuth (a singleton per id and loop): one sign-in.
        channels[mid] = [saltcompat.async_request_channel(opts) for _ in range(spec.get("channels_per_minion", 1))]
    started = time.monotonic()
    auth_errors = {}
    gate = asyncio.Semaphore(spec.get("auth_concurrency", 10))

    async def sign_in(mid, channel):
        async with gate:
            try:
                await channel.auth.authenticate()
            except Exception as err:  # reported per id: the parent refuses to measure
                auth_errors[mid] = f"{type(err).__name__}: {err}"

    await asyncio.gather(*(sign_in(mid, per_minion[0]) for mid, per_minion in channels.items()))
    conn.send(
        {
            "ready": True,
            "pid": os.getpid(),
            "setup_seconds": started - setup_started,
            "auth_seconds": time.monotonic() - started,
            "auth_errors": auth_errors,
        }
    )
    state_ret = state_return(spec["state_kb"])

    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd.get("cmd") == "quit":
            break
        conn.send(await _phase(cmd, channels, state_ret))
    for per_minion in channels.values():
        for channel in per_minion:
            await saltcompat.close_request_channel(channel)


async def _phase(cmd, channels, state_ret):
    jids, payload = cmd["jids"], cmd["payload"]
    acks, errors = [], {}
    cpu0 = _cpu_seconds()
    delay = cmd["t0"] - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    first = time.time()

    async def one_channel(m_index, mid, channel, c_index, c_count):
        for j_index in range(c_index, len(jids), c_count):
            jid = jids[j_index]
            load = make_load(payload, jid, mid, state_ret)
            try:
                await channel.send(load)
            except Exception as err:  # a failed send is counted, never retried
                key = f"{type(err).__name__}: {err}"[:200]
                errors[key] = errors.get(key, 0) + 1
                continue
            acks.append((j_index, m_index, time.time()))

    await asyncio.gather(
        *(
            one_channel(i, mid, channel, c, len(per_minion))
            for i, (mid, per_minion) in enumerate(channels.items())
            for c, channel in enumerate(per_minion)
        )
    )
    return {
        "acked": len(acks),
        "failed": sum(errors.values()),
        "errors": errors,
        "first": first,
        "last_ack": max((a[2] for a in acks), default=first),
        "acks": acks,
        "cpu": _cpu_seconds() - cpu0,
        "wall": time.time() - first,
    }
