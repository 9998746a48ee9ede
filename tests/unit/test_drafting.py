"""Speculative decoding's pure parts: n-gram lookup in a chat's own tokens, the check of a row
of drafts (`verify_drafts`), and the policy that decides how many tokens each chat drafts."""

from __future__ import annotations

from collections.abc import Sequence

from bot.engine.base import StopReason
from bot.engine.drafting import ChatDraft, Drafting, NgramSource
from bot.engine.draftplan import FILLER, STREAK, Acceptance, StepCost, plan_depth, shape
from bot.engine.ngram import LONGEST, RESYNC, NgramIndex
from bot.engine.verify import verify_drafts

# A 4-layer slice of a 7B-shaped q4_0 model on two cores (the figures).
SLICE = StepCost(0.070, 0.008, learn=False)


# -- n-gram lookup -------------------------------------------------------------------------


def test_a_guess_is_what_followed_the_longest_run_seen_before() -> None:
    index = NgramIndex([1, 2, 3, 4, 5, 9, 3, 4, 6, 7, 2, 3, 4])
    # "2 3 4" was followed by 5 (and "3 4" last by 6): the longer run wins, then goes on.
    assert index.guess(3) == [(5, 3), (9, 3), (3, 3)]


def test_the_latest_occurrence_is_followed_and_the_guess_goes_on_past_its_end() -> None:
    index = NgramIndex([7, 1, 2, 7, 3, 4, 7])
    # 7 was last followed by 3 4 7, and after that 7 again by 3 ...
    assert [token for token, _ in index.guess(5)] == [3, 4, 7, 3, 4]
    assert all(kind == 1 for _, kind in index.guess(5))


def test_no_guess_for_tokens_never_seen_and_extending_learns_them() -> None:
    index = NgramIndex([1, 2, 3])
    assert index.guess(4) == []
    index.extend([1, 2, 3, 8, 1, 2])
    assert index.guess(2) == [(3, 2), (8, 2)]  # "1 2" -> 3 8 (the run "3 1 2" was not seen)
    assert index.guess(0) == []


def test_a_copy_is_taken_up_again_just_past_an_edit() -> None:
    # The prompt: a passage 1..12, then other text where 6 is followed by 77.
    index = NgramIndex([*range(1, 13), 90, 6, 77, 78, 99])
    index.extend([1, 2, 3])  # the reply copies the passage ...
    assert index.guess(2) == [(4, 3), (5, 3)]
    index.extend([4, 50])  # ... writes 50 where the passage has 5 (an edit) ...
    assert index.guess(2) == []  # (50 was never seen)
    index.extend([6])  # ... and goes on with 6: the copy's 7, not the other text's 77.
    assert index.guess(3) == [(7, RESYNC), (8, RESYNC), (9, RESYNC)]
    index.extend([7, 8])
    assert index.guess(1) == [(9, 3)]  # copying again, by runs (6 7 8)


def test_no_copy_is_taken_up_far_from_where_it_left_off() -> None:
    index = NgramIndex([*range(1, 30), 90, 20, 77, 99])
    index.extend([1, 2, 3, 50])
    index.extend([20])  # 20 is 16 tokens past the copy's place: the last 20 is followed
    assert index.guess(1) == [(77, 1)]


def test_a_chat_draft_indexes_its_prompt_and_what_it_sampled() -> None:
    chat = ChatDraft([5, 6, 7, 8, 5], seq_id=0, acceptance=Acceptance(memory=0.9))
    assert [token for token, _ in chat.ngrams().guess(3)] == [6, 7, 8]
    chat.extend([6, 7])
    assert [token for token, _ in chat.ngrams().guess(2)] == [8, 5]
    assert chat.tokens == [5, 6, 7, 8, 5, 6, 7]


# -- the check ------------------------------------------------------------------------------


def check(drafts: Sequence[int], model: Sequence[int | None], *, ends_at: int | None = None,
          reason: StopReason = "stop") -> tuple[object, list[int], list[int]]:
    """verify_drafts with a model that writes `model[i]` at row position i; the reply ends
    (with `reason`) when its `ends_at`-th token is fed. Returns the verdict, the positions
    chosen and the tokens fed."""
    chosen: list[int] = []
    fed: list[int] = []

    def choose(position: int) -> int | None:
        chosen.append(position)
        return model[position]

    def feed(token: int) -> StopReason | None:
        fed.append(token)
        return reason if ends_at is not None and len(fed) == ends_at else None

    return verify_drafts(drafts, choose, feed), chosen, fed


def test_all_drafts_accepted_gives_one_token_more() -> None:
    verdict, chosen, fed = check([11, 12, 13], [11, 12, 13, 14])
    assert fed == [11, 12, 13, 14] and chosen == [0, 1, 2, 3]
    assert (verdict.accepted, verdict.rejected, verdict.kept, verdict.reason) == (3, False, 4, None)


def test_the_first_rejection_stops_the_check_and_nothing_after_it_is_fed() -> None:
    verdict, chosen, fed = check([11, 12, 13], [11, 99, 13, 14])
    assert fed == [11, 99] and chosen == [0, 1]  # position 2 is never even sampled
    assert (verdict.accepted, verdict.rejected, verdict.kept) == (1, True, 2)
    assert verdict.sampled == (11, 99)


def test_a_reply_ending_on_an_accepted_draft_rejects_nothing() -> None:
    verdict, _, fed = check([11, 12, 13], [11, 12, 13, 14], ends_at=2, reason="length")
    assert fed == [11, 12]
    assert (verdict.accepted, verdict.rejected, verdict.reason, verdict.kept) == (2, False,
                                                                                  "length", 2)


def test_a_cancel_in_the_middle_keeps_what_was_fed() -> None:
    verdict, _, fed = check([11, 12], [11, None, 13])
    assert fed == [11] and verdict.reason == "cancelled" and verdict.accepted == 1
    assert not verdict.rejected and verdict.kept == 1
    verdict, _, fed = check([11], [None])
    assert fed == [] and verdict.kept == 1 and verdict.sampled == ()


def test_without_drafts_it_is_one_ordinary_sample() -> None:
    verdict, chosen, fed = check([], [42])
    assert (chosen, fed, verdict.accepted, verdict.rejected) == ([0], [42], 0, False)


# -- the policy -----------------------------------------------------------------------------


def repeating_chat(drafting: Drafting, seq_id: int = 0) -> ChatDraft:
    """A chat whose tokens repeat (the n-gram lookup always has a guess)."""
    return drafting.chat([1, 2, 3, 4, 5, 6, 7, 8] * 4, seq_id)


def test_a_chat_whose_guesses_stand_drafts_deep() -> None:
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    chat = repeating_chat(drafting)
    for _ in range(10):
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        assert drafts
        drafting.settle(chat, verdict_for(drafts, accepted=len(drafts)))
    assert len(drafting.propose([(chat, 100)], [], room=500)[0]) == 4


def test_low_acceptance_stops_drafting_for_that_chat() -> None:
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    chat = repeating_chat(drafting)
    steps_drafting = 0
    for _ in range(30):
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        steps_drafting += bool(drafts)
        guess = chat.guessed[0] if chat.guessed else 0
        drafting.settle(chat, verdict_for(drafts, accepted=0, missed=guess))
    assert 0 < steps_drafting < 15
    assert drafting.propose([(chat, 100)], [], room=500) == [[]]
    assert drafting.drafted > 0 and drafting.accepted == 0


def test_guesses_not_checked_are_learned_from_the_token_sampled() -> None:
    """A pool that drafts nothing (its guesses looked poor) still compares each guess with
    the token sampled, and drafts again once they stand."""
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    chat = repeating_chat(drafting)
    for _ in range(30):  # every guess wrong: drafting stops
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        guess = chat.guessed[0] if chat.guessed else 0
        drafting.settle(chat, verdict_for(drafts, accepted=0, missed=guess))
    assert drafting.propose([(chat, 100)], [], room=500) == [[]]
    checked = drafting.drafted
    for _ in range(40):  # the model now writes what the chat's tokens say: nothing is checked
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        if drafts:
            break
        assert chat.guessed is not None
        drafting.settle(chat, verify_drafts([], lambda i: chat.guessed[0], lambda token: None))
    assert drafts and drafting.drafted == checked and chat.streak >= 1


def test_a_guess_in_a_streak_is_a_kind_of_its_own() -> None:
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    chat = repeating_chat(drafting)
    drafting.propose([(chat, 100)], [], room=500)
    assert chat.guessed is not None and chat.guessed[1] <= LONGEST
    for _ in range(3):
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        drafting.settle(chat, verdict_for(drafts, accepted=len(drafts)))
    assert chat.streak >= STREAK
    drafting.propose([(chat, 100)], [], room=500)
    assert chat.guessed is not None and chat.guessed[1] > LONGEST


def test_a_chat_that_cannot_draft_is_asked_for_nothing() -> None:
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    chat = repeating_chat(drafting)
    assert drafting.propose([(chat, 0)], [], room=500) == [[]]  # forced tokens, context's end
    assert len(drafting.propose([(chat, 2)], [], room=500)[0]) <= 2
    assert drafting.propose([(chat, 4)], [], room=0) == [[]]  # no room in the batch


def test_many_generating_chats_draft_less() -> None:
    """Each drafted token costs its share of a step whoever drafts it: with a wide batch the
    same guesses are worth fewer tokens."""
    rates = [0.7, 0.6, 0.5, 0.5]
    depths = [plan_depth([rates] * chats, [0] * chats, 0.02, [], SLICE, room=500).tokens
              for chats in (1, 4, 16, 32)]
    assert depths[0] >= 3 and depths[-1] < depths[0], depths
    assert depths == sorted(depths, reverse=True), depths
    # And poor guesses are not checked at all, even alone.
    assert plan_depth([[0.05] * 4], [0], 0.02, [], SLICE, room=500).tokens == 0


def test_a_cheap_token_and_a_costly_pass_make_drafting_pay() -> None:
    costly = StepCost(0.070, 0.035, learn=False)  # a token half as dear as a pass
    assert plan_depth([[0.5] * 4], [0], 0.02, [], costly, room=500).tokens <= 1
    assert plan_depth([[0.5] * 4], [0], 0.02, [], SLICE, room=500).tokens >= 2


def test_chats_of_a_step_check_as_many_tokens_each() -> None:
    """A chat with a shorter draft pads it with filler guesses when another pass over the
    weights would cost more than the filler tokens."""
    drafting = Drafting(NgramSource(), most=4, cost=SLICE)
    deep = repeating_chat(drafting)
    short = drafting.chat([9, 10, 11, 12, 13, 9], 1)  # only "9" repeats: 10 11 12 13 9 ...
    drafts = drafting.propose([(deep, 100), (short, 100)], [], room=500)
    assert len(drafts[0]) == len(drafts[1]) > 0


def test_the_step_cost_learns_from_measured_steps() -> None:
    cost = StepCost(0.05, 0.005)
    for _ in range(200):
        cost.observe([(1, 0)], 0.078)
        cost.observe([(5, 0)], 0.110)
        cost.observe([(1, 0), (5, 0)], 0.188)
    assert abs(cost.pass_seconds - 0.070) < 0.005 and abs(cost.token_seconds - 0.008) < 0.002


def test_the_step_cost_learns_what_attention_over_a_long_chat_adds() -> None:
    """The demo model on two cores: 2.6 ms a pass, 5.3 ms a token and 7.8 ms more a token for
    each thousand cached tokens it attends to (flash attention): a drafted token at position
    600 costs nearly what a one-token step does, and the planner must know it."""
    truth = StepCost(0.0026, 0.0053, 0.0078, learn=False)
    cost = StepCost(0.0026, 0.0053)  # measured at the start of a chat, attention unseen
    steps = [[(1, at)] for at in (100, 400, 700)] + [[(5, at)] for at in (100, 400, 700)]
    steps += [[(1, 300), (5, 600)], [(2, 50), (2, 900)]]
    for _ in range(100):
        for rows in steps:
            cost.observe(rows, truth.of(rows))
    assert abs(cost.context_seconds - 0.0078) < 0.0008, cost.context_seconds
    assert abs(cost.of([(5, 600)]) - truth.of([(5, 600)])) < 0.001


def test_a_chat_deep_in_a_long_context_drafts_less_where_attention_is_costly() -> None:
    cost = StepCost(0.0026, 0.0053, 0.0078, learn=False)
    assert plan_depth([[0.98] * 4], [0], 0.02, [], cost, room=500).tokens == 4
    fair = [[0.8] * 4]
    assert plan_depth(fair, [0], 0.02, [], cost, room=500).tokens >= 1
    assert plan_depth(fair, [1500], 0.02, [], cost, room=500).tokens == 0


def test_a_row_s_context_counts_each_token_s_own_position() -> None:
    # Three tokens at positions 100, 101, 102 and one at 10.
    assert shape([(3, 100), (1, 10)]) == (2, 4, 0.313)


def verdict_for(drafts: Sequence[int], *, accepted: int,  # type: ignore[no-untyped-def]
                missed: int = 0):
    """The verdict of a check where the first `accepted` drafts stood (the model's own token
    after them is another of `repeating_chat`'s tokens; with no drafts, one that is not
    `missed`, the guess made for it)."""
    other = (drafts[accepted] if accepted < len(drafts) else missed) % 8 + 1
    model = [*drafts[:accepted], other]
    return verify_drafts(drafts, lambda i: model[i], lambda token: None)


def test_filler_guesses_count_as_their_own_kind() -> None:
    pool = Acceptance(memory=0.995)
    chat = Acceptance(pool, memory=0.9)
    chat.record([3, 3, FILLER], accepted=2, rejected=True)
    assert chat.rate(FILLER) < pool.rate(3) and chat.rate(3) > 0.5


# -- no lone token where llama.cpp computes one apart ---------------------------------------


def top_part_is_a_lone_token(rows: Sequence[int]) -> bool:
    """Whether llama.cpp's last part of a step of rows of these lengths is one token of one
    sequence (parts: as many tokens of each sequence as the shortest row holds, and so on)."""
    lengths = sorted(rows, reverse=True)
    return lengths[0] - (lengths[1] if len(lengths) > 1 else 0) == 1


def test_a_chat_alone_that_drafts_nothing_checks_one_guess_past_the_lone_token_limit() -> None:
    for lone_token_from, position, checks in ((None, 400, 0), (256, 200, 0), (256, 400, 1)):
        drafting = Drafting(NgramSource(), most=4, cost=SLICE, lone_token_from=lone_token_from)
        chat = drafting.chat(list(range(10, 10 + position + 1)), 0)  # nothing repeats
        assert chat.position == position
        drafts = drafting.propose([(chat, 100)], [], room=500)[0]
        assert len(drafts) == checks, lone_token_from
        assert [kind for _, kind in chat.pending] == [FILLER] * checks
        # ... but never past the chat's end (no room to draft).
        assert drafting.propose([(chat, 0)], [], room=500) == [[]]


def test_no_step_leaves_a_drafting_chat_s_token_to_a_part_of_its_own(
        lone_token_from: int | None = 256) -> None:
    drafting = Drafting(NgramSource(), most=4, cost=SLICE, lone_token_from=lone_token_from)
    repeating = [drafting.chat([1, 2, 3, 4, 5, 6, 7, 8] * 40, seq) for seq in range(3)]
    plain = drafting.chat(list(range(10, 400)), 3)  # past 256 tokens, like the others
    for step in range(60):
        chats = [*repeating[: 1 + step % 3], plain][step % 2:]
        others = [(7, 0)] if step % 5 == 0 else []  # another chat's prompt
        drafts = drafting.propose([(chat, 4) for chat in chats], others, room=500)
        rows = [1 + len(own) for own in drafts]
        # A lone token on top is the prompt's, never a generating chat's.
        assert not top_part_is_a_lone_token(rows + [n for n, _ in others]) or (
            others and max(rows) < 7), (step, rows)
        for chat, own in zip(chats, drafts, strict=True):
            drafting.settle(chat, verdict_for(own, accepted=step % (len(own) + 1)))


def test_a_step_that_checks_a_guess_anyway_picks_the_best_depth_of_one_or_more() -> None:
    dear = StepCost(0.002, 0.005, learn=False)  # a token costs more than a pass
    fair = [[0.5] * 4]
    assert plan_depth(fair, [300], 0.02, [], dear, room=500).tokens == 0
    assert plan_depth(fair, [300], 0.02, [], dear, room=500, least=1).tokens == 1
    sure = [[0.99] * 4]
    assert plan_depth(sure, [300], 0.02, [], dear, room=500, least=1).tokens == 4
