"""Checks a loaded flow for mistakes the schema alone cannot see. Each rule names where."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bot.errors import FlowError
from bot.flows.expressions import ExpressionError, check_syntax, longest_render, names_read
from bot.flows.flow import Flow, Loc
from bot.flows.schema import BACK, PREVIOUS, ChoiceSpec, CommandSpec, FlowSpec, StateSpec
from bot.flows.variants import resolve

MAX_BUBBLES = 3  # per turn: on a phone more scroll the first away before they are read
MAX_BUBBLE_CHARS = 180  # per text bubble (cards excepted): about a phone screen
LINE_QUICK_REPLY_ITEMS = 13
LINE_LABEL_CHARS = 20
SLACK_BUTTON_CHARS = 75
MIN_EXAMPLES = 5  # once a question has examples, a choice with fewer is rarely the classifier's


def lint(flow: Flow) -> list[FlowError]:
    """Every problem in the flow and in each of its A/B variants, in file order."""
    problems = _lint_one(flow)
    if flow.spec.variants:
        problems += list(_variants(flow))
        seen = {(p.file, p.line, p.column, p.message) for p in problems}
        for variant in resolve(flow):
            for problem in _lint_one(variant.flow):
                if (problem.file, problem.line, problem.column, problem.message) in seen:
                    continue  # the base flow's own problem, already said once
                seen.add((problem.file, problem.line, problem.column, problem.message))
                problems.append(
                    FlowError(
                        f"variant '{variant.id}': {problem.message}",
                        file=problem.file,
                        line=problem.line,
                        column=problem.column,
                    )
                )
    return sorted(problems, key=lambda e: (e.file != flow.path, e.file, e.line, e.column))


def _lint_one(flow: Flow) -> list[FlowError]:
    """The rules, on one plain flow (a variant resolved is one too)."""
    problems = [
        *_bare_booleans(flow),
        *_unknown_targets(flow),
        *_expressions(flow),
        *_duplicates(flow),
        *_missing_texts(flow),
        *_channel_limits(flow),
        *_unreachable(flow),
        *_dead_ends(flow),
        *_unfilled_reads(flow),
        *_few_examples(flow),
        *_pacing(flow),
        *_opposites(flow),
        *_booking_labels(flow),
        *_insights(flow),
        *_brief(flow),
    ]
    return problems


def targets(state: StateSpec) -> Iterator[tuple[Loc, str]]:
    """(location suffix, target) of every edge leaving a state."""
    if isinstance(state.next, str):
        yield ("next",), state.next
    elif state.next:
        for i, branch in enumerate(state.next):
            yield ("next", i, "goto"), branch.goto
    if state.ask:
        for i, choice in enumerate(state.ask.choices):
            if choice.goto and choice.goto != PREVIOUS:
                yield ("ask", "choices", i, "goto"), choice.goto


def entry_points(spec: FlowSpec) -> set[str]:
    """States a conversation can enter from outside the flow's own edges."""
    entries = {spec.start}
    entries |= {s for s in (spec.returning, spec.resume, spec.again) if s}
    entries |= {c.goto for c in spec.commands if c.goto and c.goto != BACK}
    entries |= {f.goto for f in spec.followups}
    entries |= {name for name, state in spec.states.items() if state.fallback}
    return entries


# ---------------------------------------------------------------- rules


def _bare_booleans(flow: Flow) -> Iterator[FlowError]:
    for loc in sorted(flow.bare_booleans, key=flow.where):
        # Only fields typed boolean get here (elsewhere the schema already refused the value).
        yield flow.error(
            loc, "a bare yes/no/on/off is read by YAML as a boolean: write true or false"
        )


def _unknown_targets(flow: Flow) -> Iterator[FlowError]:
    spec = flow.spec
    for field in ("start", "returning", "resume"):
        target = getattr(spec, field)
        if target and target not in spec.states:
            yield flow.error((field,), f"{field} is the unknown state '{target}'")
    for name, state in spec.states.items():
        for suffix, target in targets(state):
            if target not in spec.states:
                yield flow.error(
                    ("states", name, *suffix), f"state '{name}' goes to unknown state '{target}'"
                )
    for field in ("again",):
        target = getattr(spec, field)
        if target and target not in spec.states:
            yield flow.error((field,), f"{field} is the unknown state '{target}'")
    for i, command in enumerate(spec.commands):
        if command.goto and command.goto != BACK and command.goto not in spec.states:
            yield flow.error(
                ("commands", i, "goto"),
                f"command '{command.id}' goes to unknown state '{command.goto}'",
            )
    for i, followup in enumerate(spec.followups):
        if followup.command and spec.command(followup.command) is None:
            yield flow.error(
                ("followups", i, "command"),
                f"follow-up '{followup.id}' names the unknown command '{followup.command}'",
            )
        for field in ("entered", "goto"):
            target = getattr(followup, field)
            if target is not None and target not in spec.states:
                yield flow.error(
                    ("followups", i, field),
                    f"follow-up '{followup.id}' {field} is the unknown state '{target}'",
                )


def _expressions(flow: Flow) -> Iterator[FlowError]:
    for loc, source, is_expression in _sources(flow.spec):
        try:
            check_syntax(source, expression=is_expression)
        except ExpressionError as exc:
            yield flow.error(loc, f"bad {'expression' if is_expression else 'template'}: {exc}")


def _duplicates(flow: Flow) -> Iterator[FlowError]:
    seen: dict[str, int] = {}
    for i, command in enumerate(flow.spec.commands):
        if command.id in seen:
            yield flow.error(("commands", i, "id"), f"duplicate command id '{command.id}'")
        seen[command.id] = i
    for name, state in flow.spec.states.items():
        if not state.ask:
            continue
        ids: set[str] = set()
        for i, choice in enumerate(state.ask.choices):
            loc: Loc = ("states", name, "ask", "choices", i, "id")
            if choice.id in ids:
                yield flow.error(loc, f"state '{name}' has the choice id '{choice.id}' twice")
            if choice.id in seen:
                yield flow.error(loc, f"choice id '{choice.id}' in '{name}' is also a command id")
            ids.add(choice.id)
    followup_ids: set[str] = set()
    for i, followup in enumerate(flow.spec.followups):
        if followup.id in followup_ids:
            yield flow.error(("followups", i, "id"), f"duplicate follow-up id '{followup.id}'")
        followup_ids.add(followup.id)
    fallbacks = [n for n, s in flow.spec.states.items() if s.fallback]
    for extra in fallbacks[1:]:
        yield flow.error(("states", extra, "fallback"), "only one state can be the fallback")


def _missing_texts(flow: Flow) -> Iterator[FlowError]:
    spec = flow.spec
    for i, command in enumerate(spec.commands):
        if not command.label.strip():
            yield flow.error(("commands", i, "label"), f"command '{command.id}' has no label")
    for name, state in spec.states.items():
        base: Loc = ("states", name)
        for i, message in enumerate(state.messages()):
            if message.text is not None and not message.text.strip():
                yield flow.error((*base, "say", i), f"state '{name}' says an empty text")
            if message.card and not message.card.title.strip():
                yield flow.error(
                    (*base, "say", i, "card"), f"state '{name}' has a card with no title"
                )
        if state.ask:
            if not state.ask.text.strip():
                yield flow.error((*base, "ask", "text"), f"state '{name}' asks an empty question")
            for i, choice in enumerate(state.ask.choices):
                if not choice.label.strip():
                    yield flow.error(
                        (*base, "ask", "choices", i, "label"),
                        f"choice '{choice.id}' in '{name}' has no label",
                    )
        routes = isinstance(state.next, tuple)  # a state of branches only is a router
        if not (
            state.say
            or state.ask
            or state.handoff
            or state.book
            or state.end
            or state.set
            or routes
        ):
            yield flow.error(base, f"state '{name}' does nothing: give it a message or a question")


def _channel_limits(flow: Flow) -> Iterator[FlowError]:
    for i, command in enumerate(flow.spec.commands):
        yield from _label_limits(
            flow, ("commands", i, "label"), command.label, f"command '{command.id}'"
        )
    for name, state in flow.spec.states.items():
        if not state.ask:
            continue
        ask = state.ask
        # One extra button: the multi-select "done", or the agent offer after repeated misses.
        buttons = len(ask.choices) + 1
        if buttons > LINE_QUICK_REPLY_ITEMS:
            yield flow.error(
                ("states", name, "ask", "choices"),
                f"state '{name}' offers {buttons} buttons with its extra button; "
                f"LINE quick reply allows {LINE_QUICK_REPLY_ITEMS}",
            )
        for i, choice in enumerate(ask.choices):
            yield from _label_limits(
                flow,
                ("states", name, "ask", "choices", i, "label"),
                choice.label,
                f"choice '{choice.id}' in '{name}'",
            )
        if ask.multi:
            yield from _label_limits(
                flow,
                ("states", name, "ask", "done_label"),
                ask.done_label,
                f"done button of '{name}'",
            )


def _label_limits(flow: Flow, loc: Loc, label: str, what: str) -> Iterator[FlowError]:
    if len(label) > LINE_LABEL_CHARS:
        yield flow.error(
            loc,
            f"{what}: label '{label}' has {len(label)} characters; LINE allows {LINE_LABEL_CHARS}",
        )
    if len(label) > SLACK_BUTTON_CHARS:
        yield flow.error(loc, f"{what}: label is over Slack's {SLACK_BUTTON_CHARS} characters")


def _unreachable(flow: Flow) -> Iterator[FlowError]:
    spec = flow.spec
    seen: set[str] = set()
    todo = [s for s in entry_points(spec) if s in spec.states]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [t for _, t in targets(spec.states[name]) if t in spec.states]
    for name in spec.states:
        if name not in seen:
            yield flow.error(("states", name), f"state '{name}' is unreachable from '{spec.start}'")


def _dead_ends(flow: Flow) -> Iterator[FlowError]:
    for name, state in flow.spec.states.items():
        if state.end or state.next is not None:
            if isinstance(state.next, tuple) and state.next and state.next[-1].if_ is not None:
                yield flow.error(
                    ("states", name, "next"),
                    f"state '{name}': the last branch needs no 'if', so some branch always holds",
                )
            continue
        if state.ask and all(c.goto for c in state.ask.choices):
            continue
        if state.handoff and flow.spec.resume:
            continue
        yield flow.error(
            ("states", name), f"state '{name}' has no way out: add 'next' or make it 'end: true'"
        )


def _unfilled_reads(flow: Flow) -> Iterator[FlowError]:
    """A slot read where some path reaches without having filled it."""
    spec = flow.spec
    every = {slot for state in spec.states.values() for slot in _fills(state)}
    filled_on_entry: dict[str, set[str]] = {name: set(every) for name in spec.states}
    for entry in entry_points(spec):
        if entry in filled_on_entry:
            filled_on_entry[entry] = set()
    changed = True
    while changed:  # must-analysis: a slot counts only when filled on every path in
        changed = False
        for name, state in spec.states.items():
            out = filled_on_entry[name] | _fills(state)
            for _, target in targets(state):
                if target in filled_on_entry and not filled_on_entry[target] <= out:
                    filled_on_entry[target] &= out
                    changed = True
    for name, state in spec.states.items():
        known = set(filled_on_entry[name])
        known |= set(state.set)  # set runs first
        # A conditional message's body is read only when its `if` holds (e.g. `x is defined`).
        conditions: dict[Loc, str] = {
            ("states", name, "say", i): m.if_ for i, m in enumerate(state.messages()) if m.if_
        }
        for loc, source, is_expression in _state_sources(name, state):
            condition = conditions.get(loc[:4])
            if condition and not is_expression:
                source = f"{{% if {condition} %}}{source}{{% endif %}}"
            readable = known | ({state.ask.slot} if state.ask and loc[2] == "next" else set())
            try:
                missing = names_read(source, expression=is_expression) - readable
            except Exception:  # syntax errors are reported by their own rule
                continue
            for slot in sorted(missing):
                if slot in spec.vars:
                    yield flow.error(loc, f"'{slot}' is a flow var: read it as vars.{slot}")
                else:
                    yield flow.error(
                        loc,
                        f"state '{name}' reads slot '{slot}', which is not filled on every path "
                        "to it (guard it with 'is defined' or fill it first)",
                    )


def _few_examples(flow: Flow) -> Iterator[FlowError]:
    """Examples are all or nothing within a question (and among the commands).

    The classifier picks the intent with the nearest example: a choice with none or only a
    couple loses to its neighbours even when the message means it.
    """
    groups: list[tuple[Loc, Sequence[ChoiceSpec | CommandSpec], str]] = [
        (("commands",), flow.spec.commands, "command")
    ]
    for name, state in flow.spec.states.items():
        if state.ask:
            groups.append((("states", name, "ask", "choices"), state.ask.choices, f"'{name}'"))
    for base, specs, where in groups:
        if not any(spec.examples for spec in specs):
            continue
        for i, spec in enumerate(specs):
            if len(spec.examples) < MIN_EXAMPLES:
                what = f"command '{spec.id}'" if where == "command" else f"choice '{spec.id}'"
                place = "" if where == "command" else f" in {where}"
                yield flow.error(
                    (*base, i, "id"),
                    f"{what}{place} has {len(spec.examples)} examples; give it at least "
                    f"{MIN_EXAMPLES} (its neighbours have examples, so the classifier would "
                    "rarely pick it)",
                )


def _pacing(flow: Flow) -> Iterator[FlowError]:
    """At most MAX_BUBBLES bubbles a turn and MAX_BUBBLE_CHARS characters a text bubble.

    A turn is what the bot sends between two of the user's messages: the states entered from
    an answer (or a command, or a start) up to the next question, handoff or end. Every `say`
    item counts, conditional or not (write alternatives as one templated text with
    {% if %}…{% elif %}); the longest way a template can render is measured, with flow vars
    filled in and other values at a generous width. Cards are exempt from the length: long
    advice belongs in a card or behind a 「くわしく」 choice.
    """
    spec = flow.spec
    for loc, text in _bubble_texts(spec):
        length = longest_render(text, spec.vars)
        if length > MAX_BUBBLE_CHARS:
            owner = loc[1] if loc[0] == "states" else f"{loc[0]} {loc[1]}"
            yield flow.error(
                loc,
                f"state '{owner}': a bubble of up to {length} characters; at most "
                f"{MAX_BUBBLE_CHARS} fit a phone (shorten it, split the turn, or use a card)",
            )
    starts: list[tuple[Loc, str, int, str]] = []  # (where, first state, bubbles before, why)
    for name in entry_points(spec) - {c.goto for c in spec.commands if c.goto}:
        starts.append((("states", name), name, 0, f"entering '{name}'"))
    for i, command in enumerate(spec.commands):
        if command.goto is not None and command.goto in spec.states:
            why = f"command '{command.id}'"
            starts.append((("commands", i), command.goto, len(command.say), why))
    for name, state in spec.states.items():
        if state.ask:
            for _, target in targets(state):
                starts.append((("states", target), target, 0, f"an answer to '{name}'"))
    seen: set[tuple[str, int]] = set()
    for loc, first, before, why in starts:
        if (first, before) in seen:
            continue
        seen.add((first, before))
        count, path = _bubbles(spec, first)
        if before + count > MAX_BUBBLES:
            yield flow.error(
                loc,
                f"state '{first}': {why} can send {before + count} bubbles in one turn "
                f"({' -> '.join(path)}); at most {MAX_BUBBLES} on a phone",
            )


def _bubbles(spec: FlowSpec, name: str, depth: int = 0) -> tuple[int, list[str]]:
    """The most bubbles a turn sends from entering `name`, and the states on that path."""
    state = spec.states.get(name)
    if state is None or depth > 50:
        return 0, [name]
    # A book step asks one question when entered (or says the booking, then a question).
    own = len(state.say) + (1 if state.ask else 0) + (1 if state.book else 0)
    if state.ask or state.handoff or state.end or state.book:
        return own, [name]
    best, path = 0, []
    for _, target in targets(state):
        count, sub = _bubbles(spec, target, depth + 1)
        if count >= best:
            best, path = count, sub
    return own + best, [name, *path]


def _bubble_texts(spec: FlowSpec) -> Iterator[tuple[Loc, str]]:
    for i, command in enumerate(spec.commands):
        for j, text in enumerate(command.say):
            yield ("commands", i, "say", j), text
        if command.confirm:
            yield ("commands", i, "confirm"), command.confirm
    for i, faq in enumerate(spec.faq):
        for j, text in enumerate(faq.say):
            yield ("faq", i, "say", j), text
    for name, state in spec.states.items():
        for i, message in enumerate(state.messages()):
            if message.text is not None:
                yield ("states", name, "say", i), message.text
        if state.ask:
            yield ("states", name, "ask", "text"), state.ask.text


def _opposites(flow: Flow) -> Iterator[FlowError]:
    for name, state in flow.spec.states.items():
        if not state.ask:
            continue
        ids = {c.id for c in state.ask.choices}
        for i, choice in enumerate(state.ask.choices):
            if choice.opposite is not None and choice.opposite not in ids:
                yield flow.error(
                    ("states", name, "ask", "choices", i, "opposite"),
                    f"choice '{choice.id}' in '{name}': opposite '{choice.opposite}' is not a "
                    "choice of this question",
                )
        if sum(c.unsure for c in state.ask.choices) > 1:
            yield flow.error(
                ("states", name, "ask", "choices"),
                f"state '{name}' has more than one unsure choice",
            )


# Booking texts that are buttons: within LINE's and Slack's label limits.
_BOOKING_LABELS = (
    "method_chat",
    "method_phone",
    "method_email",
    "consent_yes",
    "consent_no",
    "change_contact",
    "keep_contact",
    "more_slots",
    "not_now",
    "reschedule",
    "cancel",
    "keep_booking",
    "cancel_yes",
    "cancel_no",
)


def _booking_labels(flow: Flow) -> Iterator[FlowError]:
    texts = flow.spec.booking
    if texts is None:
        return
    for field in _BOOKING_LABELS:
        yield from _label_limits(flow, ("booking", field), getattr(texts, field), f"'{field}'")


MAX_AGENT_LABEL = 12  # a question's label for agents: a column of a narrow table


def _brief(flow: Flow) -> Iterator[FlowError]:
    """With a brief, agents read labels, never question texts or slot keys: every question
    needs a short `label`, and the brief reads only slots the flow fills."""
    spec = flow.spec
    if spec.brief is None:
        return
    for name, state in spec.states.items():
        if state.ask is None:
            continue
        label = (state.ask.label or "").strip()
        loc: Loc = ("states", name, "ask")
        if not label:
            yield flow.error(loc, f"question '{name}' needs a short `label` for agents (brief)")
        elif len(label) > MAX_AGENT_LABEL:
            yield flow.error(
                (*loc, "label"),
                f"label '{label}' is {len(label)} characters; agents' labels are at most "
                f"{MAX_AGENT_LABEL}",
            )
    every = {slot for state in spec.states.values() for slot in _fills(state)}
    every |= {slot for state in spec.states.values() if state.ask for slot in state.ask.capture}
    sources: list[tuple[Loc, str]] = [
        (("brief", "line", i), part) for i, part in enumerate(spec.brief.line)
    ]
    sources += [(("brief", "facts", i, "value"), f.value) for i, f in enumerate(spec.brief.facts)]
    for loc, source in sources:
        try:
            check_syntax(source)
            unknown = names_read(source) - every
        except ExpressionError as exc:
            yield flow.error(loc, f"bad template: {exc}")
            continue
        for slot in sorted(unknown):
            yield flow.error(loc, f"the brief reads '{slot}', which no state fills")


def _fills(state: StateSpec) -> set[str]:
    return set(state.set) | ({state.ask.slot} if state.ask else set())


def _sources(spec: FlowSpec) -> Iterator[tuple[Loc, str, bool]]:
    for i, command in enumerate(spec.commands):
        for j, text in enumerate(command.say):
            yield ("commands", i, "say", j), text, False
        for slot, expression in command.set.items():
            yield ("commands", i, "set", slot), expression, True
    for i, followup in enumerate(spec.followups):
        if followup.if_:
            yield ("followups", i, "if"), followup.if_, True
    for name, state in spec.states.items():
        yield from _state_sources(name, state)
    if spec.booking is not None:
        for field, text in spec.booking.model_dump().items():
            yield ("booking", field), text, False


def _state_sources(name: str, state: StateSpec) -> Iterator[tuple[Loc, str, bool]]:
    base: Loc = ("states", name)
    for slot, expression in state.set.items():
        yield (*base, "set", slot), expression, True
    for i, message in enumerate(state.messages()):
        loc: Loc = (*base, "say", i)
        if message.if_:
            yield loc, message.if_, True
        if message.text is not None:
            yield loc, message.text, False
        if message.card:
            yield loc, message.card.title, False
            for j, card_field in enumerate(message.card.fields):
                yield (*loc, "card", "fields", j), card_field.label, False
                yield (*loc, "card", "fields", j), card_field.value, False
            if message.card.footer:
                yield (*loc, "card", "footer"), message.card.footer, False
    if state.handoff:
        yield (*base, "handoff", "reason"), state.handoff.reason, False
    if state.ask:
        yield (*base, "ask", "text"), state.ask.text, False
    if isinstance(state.next, tuple):
        for i, branch in enumerate(state.next):
            if branch.if_:
                yield (*base, "next", i, "if"), branch.if_, True


# ---------------------------------------------------------------- analytics and A/B variants


def _insights(flow: Flow) -> Iterator[FlowError]:
    """Funnel steps, answer tables and results name states and questions that exist."""
    spec = flow.spec
    insights = spec.insights
    if insights is None:
        return
    base: Loc = ("insights",)
    ids: set[str] = set()
    for i, step in enumerate(insights.funnel):
        loc: Loc = (*base, "funnel", i)
        if step.id in ids:
            yield flow.error((*loc, "id"), f"funnel step '{step.id}' is declared twice")
        ids.add(step.id)
        if i == 0 and not step.enter:
            yield flow.error(loc, f"the first funnel step '{step.id}' begins runs: give it 'enter'")
        for j, name in enumerate(step.enter):
            if name not in spec.states:
                yield flow.error(
                    (*loc, "enter", j), f"funnel step '{step.id}' enters unknown state '{name}'"
                )
        if step.answer is not None:
            yield from _question(flow, (*loc, "answer"), step.answer, f"funnel step '{step.id}'")
    if insights.cross is not None:
        for j, name in enumerate(insights.cross):
            yield from _question(flow, (*base, "cross", j), name, "cross")
    for j, name in enumerate(insights.distributions):
        yield from _question(flow, (*base, "distributions", j), name, "distributions")
    for j, result in enumerate(insights.results):
        state = spec.states.get(result.state)
        if state is None:
            yield flow.error(
                (*base, "results", j, "state"),
                f"result '{result.id}' is worked out in unknown state '{result.state}'",
            )
        elif result.slot not in state.set:
            yield flow.error(
                (*base, "results", j, "slot"),
                f"result '{result.id}': state '{result.state}' does not set slot '{result.slot}'",
            )


def _question(flow: Flow, loc: Loc, name: str, what: str) -> Iterator[FlowError]:
    state = flow.spec.states.get(name)
    if state is None:
        yield flow.error(loc, f"{what} names unknown state '{name}'")
    elif state.ask is None:
        yield flow.error(loc, f"{what} names '{name}', which asks no question")


def _variants(flow: Flow) -> Iterator[FlowError]:
    """Variant ids, weights and the states they replace."""
    spec = flow.spec
    ids: set[str] = set()
    for i, variant in enumerate(spec.variants):
        loc: Loc = ("variants", i)
        if variant.id in ids:
            yield flow.error((*loc, "id"), f"variant id '{variant.id}' is used twice")
        ids.add(variant.id)
        for name in variant.states:
            if name not in spec.states:
                yield flow.error(
                    (*loc, "states", name),
                    f"variant '{variant.id}' replaces '{name}', which the flow does not have",
                )
        whole = flow.variant_files.get(variant.id)
        if whole is not None and whole.id != spec.flow:
            yield flow.error(
                (*loc, "file"),
                f"variant '{variant.id}': {variant.file} is flow '{whole.id}', not '{spec.flow}'",
            )
        if whole is not None and whole.spec.variants:
            yield flow.error(
                (*loc, "file"), f"variant '{variant.id}': {variant.file} has variants of its own"
            )
        for name in variant.vars:
            if name not in spec.vars:
                yield flow.error(
                    (*loc, "vars", name),
                    f"variant '{variant.id}' changes var '{name}', which the flow does not have",
                )
    if len(spec.variants) == 1:
        yield flow.error(("variants",), "one variant is no test: declare two or more")
    if spec.variants and sum(v.weight for v in spec.variants) == 0:
        yield flow.error(("variants",), "every variant has weight 0: nobody would get the flow")
