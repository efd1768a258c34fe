"""Admission: every refusal reason, decided before anything is written."""

from __future__ import annotations

from pipeline.admission import Admission, AdmissionConfig, Refusal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    config: AdmissionConfig, *, pending: int = 0, free: int = 1 << 40
) -> tuple[Admission, Clock, dict[str, int]]:
    clock = Clock()
    state = {"pending": pending, "free": free}
    admission = Admission(
        config,
        pending_bytes=lambda: state["pending"],
        free_disk=lambda: state["free"],
        clock=clock,
    )
    return admission, clock, state


def test_admits_by_default() -> None:
    admission, _, _ = make(AdmissionConfig())
    assert admission.check(1000, 200_000) is None
    assert admission.check(0, 0) is None


def test_stopping_refuses_everything_including_the_probe() -> None:
    admission, _, _ = make(AdmissionConfig())
    admission.stopping = True
    assert admission.check(0, 0) is Refusal.STOPPING


def test_a_call_larger_than_the_limit_passes_alone() -> None:
    # Else it could never pass, and its client would retry it for ever.
    admission, _, state = make(AdmissionConfig(max_pending_bytes=1000))
    assert admission.check(1, 5000) is None
    state["pending"] = 1
    assert admission.check(1, 5000) is Refusal.QUEUE


def test_queue_limit_counts_the_batch_itself() -> None:
    admission, _, state = make(AdmissionConfig(max_pending_bytes=1000), pending=900)
    assert admission.check(1, 100) is None
    assert admission.check(1, 101) is Refusal.QUEUE
    state["pending"] = 1000
    assert admission.check(0, 0) is Refusal.QUEUE  # a full queue refuses the probe too


def test_message_rate_with_burst_and_refill() -> None:
    admission, clock, _ = make(AdmissionConfig(rate_messages_per_s=100, rate_burst_s=1))
    assert admission.check(100, 0) is None
    assert admission.check(1, 0) is None  # bucket at 0: one call may go into debt
    assert admission.check(1, 0) is Refusal.RATE
    clock.now += 0.5
    assert admission.check(10, 0) is None


def test_byte_rate() -> None:
    admission, _, _ = make(AdmissionConfig(rate_bytes_per_s=1000))
    assert admission.check(1, 1500) is None
    assert admission.check(1, 1) is Refusal.RATE


def test_disk_space_is_checked_at_most_once_per_interval() -> None:
    admission, clock, state = make(
        AdmissionConfig(min_free_disk_bytes=100, disk_check_interval_s=1)
    )
    assert admission.check(1, 1) is None
    state["free"] = 10
    assert admission.check(1, 1) is None  # cached until the interval passes
    clock.now += 1
    assert admission.check(1, 1) is Refusal.DISK
    assert admission.disk_problem() == "free disk space is below admission.min_free_disk_bytes"
    state["free"] = 1000
    clock.now += 1
    assert admission.check(1, 1) is None


def test_journal_full_refuses_until_space_returns() -> None:
    admission, clock, _ = make(AdmissionConfig(disk_check_interval_s=1))
    admission.note_disk_full()
    assert admission.check(0, 0) is Refusal.DISK
    assert admission.disk_problem() == "the journal's disk is full"
    clock.now += 1
    assert admission.check(0, 0) is None
    assert admission.disk_problem() is None


def test_reconfigure_applies_new_limits() -> None:
    admission, _, _ = make(AdmissionConfig(max_pending_bytes=10), pending=5)
    assert admission.check(1, 100) is Refusal.QUEUE
    admission.reconfigure(AdmissionConfig(max_pending_bytes=1000))
    assert admission.check(1, 100) is None


def test_a_call_refused_by_one_rate_spends_nothing_of_the_other() -> None:
    admission, clock, _ = make(AdmissionConfig(rate_messages_per_s=100, rate_bytes_per_s=100))
    assert admission.check(1, 150) is None  # the byte bucket goes into debt
    assert admission.check(300, 1) is Refusal.RATE  # had it spent, messages would be at -201
    clock.now += 0.6  # bytes back to +10
    assert admission.check(1, 1) is None
