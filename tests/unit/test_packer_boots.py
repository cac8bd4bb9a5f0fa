"""bench/packer_boots.py reads `invoke image`'s output: the lines below are a real run's
(`invoke image` of debian-13 on 2026-11-28, TCG), in the order it printed them; the
seconds beside them are the test's (what the script measures as they come)."""

from __future__ import annotations

from pathlib import Path

from bench.packer_boots import Boot, describe, packer_duration, read_line

LOGS = "/work/h-C3/build/debian-13/logs"
IMAGE_OUTPUT = [
    (0.9, f"goldbox image: debian-13, box goldbox-flask 0.1.0; log: "
          f"{LOGS}/image-20261128T154047Z.log"),
    (1.2, "==> packer"),
    (1.3, f"packer: guest console: {LOGS}/image-20261128T154047Z.console.golden.log"),
    (2.0, "[packer] ==> qemu.debian-13: Retrieving ISO"),
    (4.1, "[packer] ==> qemu.debian-13: Starting VM, booting disk image"),
    (16.5, "[packer] ==> qemu.debian-13: Waiting for SSH to become available..."),
    (190.6, "[packer] ==> qemu.debian-13: Connected to SSH!"),
    (329.8, "[packer] Build 'qemu.debian-13' finished after 5 minutes 28 seconds."),
    (331.0, "    packer: 330.9 s, qemu, accelerator tcg"),
]


def read_all(lines: list[tuple[float, str]]) -> Boot:
    boot = Boot(1)
    for seconds, line in lines:
        read_line(boot, seconds, line + "\n")
    return boot


def test_a_golden_build_s_output_gives_its_stages_logs_and_packer_s_time():
    boot = read_all(IMAGE_OUTPUT)
    assert boot.stages == {"vm": 4.1, "ssh": 190.6}
    assert boot.to_ssh_s == 190.6 - 4.1
    assert boot.packer_s == 5 * 60 + 28
    assert boot.build_log == Path(f"{LOGS}/image-20261128T154047Z.log")
    assert boot.consoles == [Path(f"{LOGS}/image-20261128T154047Z.console.golden.log")]
    assert boot.last_line == "    packer: 330.9 s, qemu, accelerator tcg"


def test_packer_s_durations_as_its_build_log_has_them():
    # From build logs of debian-12's golden build (unprefixed, as the log holds them).
    assert packer_duration("2 minutes 3 seconds") == 123
    assert packer_duration("1 minute 47 seconds") == 107
    boot = read_all([(99.0, "Build 'qemu.debian-12' finished after 1 minute 47 seconds.")])
    assert boot.packer_s == 107


def test_a_failed_build_is_printed_with_invoke_s_last_line():
    boot = read_all(IMAGE_OUTPUT[:4])
    boot.total_s = 3.0
    assert boot.stages == {} and boot.to_ssh_s is None and boot.packer_s is None
    printed = describe(boot).splitlines()
    assert printed[0] == ("boot  1: FAILED  to vm      -    to ssh      -    boot to SSH     -    "
                          "packer      -    total    3.0 s")
    assert printed[1:] == ["    invoke: [packer] ==> qemu.debian-13: Retrieving ISO"]
