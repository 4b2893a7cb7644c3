// yarigai agent console: live queue and conversation over Server-Sent Events, forms sent
// with fetch so the page never reloads. Plain JavaScript, no build step. User text is only
// ever set with textContent, never parsed as HTML.
"use strict";

(() => {
  const body = document.body;
  const csrf = body.dataset.csrf;
  const me = body.dataset.me;
  const toastBox = document.getElementById("toast");
  let toastTimer = null;

  function toast(message, bad) {
    if (!toastBox || !message) return;
    toastBox.textContent = message;
    toastBox.classList.toggle("bad", Boolean(bad));
    toastBox.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);
  }
  if (toastBox && !toastBox.hidden) toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const clock = new Intl.DateTimeFormat("ja-JP", { hour: "2-digit", minute: "2-digit" });
  const dated = new Intl.DateTimeFormat("ja-JP", { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });

  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const when = new Date(t.getAttribute("datetime"));
      if (!isNaN(when)) t.textContent = (t.closest(".line") ? clock : dated).format(when);
    }
  }

  function since(iso) {
    const minutes = Math.max(0, Math.round((Date.now() - new Date(iso)) / 60000));
    if (minutes < 1) return "たった今";
    if (minutes < 60) return `${minutes}分前から`;
    return `${Math.floor(minutes / 60)}時間${minutes % 60}分前から`;
  }

  function waitedFor(iso) {
    const minutes = Math.max(0, Math.floor((Date.now() - new Date(iso)) / 60000));
    if (minutes < 1) return "1分未満";
    if (minutes < 60) return `${minutes}分`;
    return `${Math.floor(minutes / 60)}時間${minutes % 60}分`;
  }

  function refreshSince() {
    for (const s of document.querySelectorAll("[data-since]")) s.textContent = since(s.dataset.since);
    for (const s of document.querySelectorAll("[data-waited]")) s.textContent = waitedFor(s.dataset.waited);
  }

  // ------------------------------------------------------------ forms

  for (const form of document.querySelectorAll("form[data-async]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const question = form.dataset.confirm;
      if (question && !window.confirm(question)) return;
      const data = new FormData(form);
      if (event.submitter && event.submitter.name) data.set(event.submitter.name, event.submitter.value);
      const buttons = form.querySelectorAll("button");
      buttons.forEach((b) => { b.disabled = true; });
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: data,
          headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
          credentials: "same-origin",
        });
        if (response.status === 401) { window.location.reload(); return; }
        const answer = await response.json().catch(() => ({ ok: false, message: "エラーが起きました。" }));
        toast(answer.message || answer.detail, !response.ok);
        // The move's result shows at once; the feed confirms it a moment later.
        if (response.ok && answer.handoff && conversation) applyHandoff(answer.handoff);
        if (response.ok && form.hasAttribute("data-reset")) {
          const text = form.querySelector("textarea");
          if (text) text.value = "";
        }
      } catch (error) {
        toast("送れませんでした。接続を確かめてください。", true);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
  }

  const composer = document.getElementById("text");
  if (composer) {
    composer.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        const send = document.getElementById("send");
        (send && !send.hidden ? send : document.getElementById("note")).click();
      }
    });
  }

  // ------------------------------------------------------------ live queue

  const queue = document.getElementById("queue");
  const baseTitle = document.title.replace(/^\(\d+\) /, "");

  function shown(h) {
    const show = queue ? queue.dataset.show : "all";
    if (show === "mine") return h.agent === me;
    if (show === "waiting") return h.status === "waiting";
    return true;
  }

  function renderQueue(items) {
    const waiting = items.filter((h) => h.status === "waiting").length;
    alertNew(items);
    document.title = (waiting ? `(${waiting}) ` : "") + baseTitle;
    if (!queue) return;
    const known = new Set([...queue.children].map((li) => li.dataset.id));
    queue.replaceChildren(...items.map((h) => {
      const li = el("li", `item ${h.status}${h.unread ? " unread" : ""}`);
      li.dataset.id = String(h.id);
      li.dataset.status = h.status;
      li.dataset.agent = h.agent || "";
      li.hidden = !shown(h);
      if (!known.has(String(h.id))) li.classList.add("fresh");
      const a = el("a");
      a.href = `/console/handoffs/${h.id}`;
      const headline = el("span", "headline");
      if (h.unread) {
        const dot = el("span", "dot", "●");
        dot.title = "未読";
        headline.append(dot);
      }
      headline.append(h.brief || "（回答なし）");
      a.append(
        el("span", `badge ${h.status}`, h.status_label),
        el("span", "channel", h.channel_label),
        headline,
        el("span", "preview", h.preview || h.reason),
      );
      const when = el("span", "since", since(h.requested_at));
      when.dataset.since = h.requested_at;
      a.append(when);
      if (h.agent_name) a.append(el("span", "holder", `担当: ${h.agent_name}`));
      if (h.timeout_notified && h.status === "waiting") a.append(el("span", "late", "待ち時間超過"));
      li.append(a);
      return li;
    }));
    const count = (id, n) => { const node = document.getElementById(id); if (node) node.textContent = String(n); };
    count("count-waiting", waiting);
    count("count-claimed", items.filter((h) => h.status === "claimed").length);
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = items.some(shown);
  }

  if (queue) {
    for (const link of document.querySelectorAll(".filters a[data-show]")) {
      link.addEventListener("click", (event) => {
        event.preventDefault();
        queue.dataset.show = link.dataset.show;
        for (const other of document.querySelectorAll(".filters a")) other.removeAttribute("aria-current");
        link.setAttribute("aria-current", "true");
        history.replaceState(null, "", link.href);
        for (const li of queue.children) li.hidden = !shown({ status: li.dataset.status, agent: li.dataset.agent });
        const empty = document.getElementById("empty");
        if (empty) empty.hidden = [...queue.children].some((li) => !li.hidden);
      });
    }
  }

  // ------------------------------------------------------------ a new request: sound, notification

  // Requests seen since the page opened; the first queue event only fills it (no alert for
  // what was already waiting).
  let seen = null;
  const notifyButton = document.getElementById("notify");
  const NOTIFY_KEY = "yarigai.console.notify";

  function notifying() {
    return "Notification" in window && Notification.permission === "granted" && localStorage.getItem(NOTIFY_KEY) === "on";
  }

  function showNotifyButton() {
    if (!notifyButton || !("Notification" in window)) return;
    notifyButton.hidden = false;
    notifyButton.textContent = notifying() ? "通知: オン" : "通知を受け取る";
  }

  if (notifyButton) {
    notifyButton.addEventListener("click", async () => {
      if (notifying()) {
        localStorage.setItem(NOTIFY_KEY, "off");
        toast("新しい依頼の通知を止めました。");
      } else {
        const answer = await Notification.requestPermission();
        if (answer === "granted") {
          localStorage.setItem(NOTIFY_KEY, "on");
          toast("新しい依頼が来たら、音と通知でお知らせします。");
        } else {
          toast("ブラウザーの設定で通知が許可されていません。", true);
        }
      }
      showNotifyButton();
    });
  }

  function chime() {
    try {
      const Audio = window.AudioContext || window.webkitAudioContext;
      if (!Audio) return;
      const audio = new Audio();
      for (const [at, pitch] of [[0, 880], [0.18, 1320]]) {
        const tone = audio.createOscillator();
        const gain = audio.createGain();
        tone.frequency.value = pitch;
        gain.gain.setValueAtTime(0.15, audio.currentTime + at);
        gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + at + 0.3);
        tone.connect(gain).connect(audio.destination);
        tone.start(audio.currentTime + at);
        tone.stop(audio.currentTime + at + 0.3);
      }
    } catch (error) { /* no sound is no reason to miss the request */ }
  }

  function alertNew(items) {
    const waiting = items.filter((h) => h.status === "waiting");
    if (seen === null) { seen = new Set(items.map((h) => h.id)); return; }
    const fresh = waiting.filter((h) => !seen.has(h.id));
    for (const h of items) seen.add(h.id);
    if (!fresh.length || localStorage.getItem(NOTIFY_KEY) !== "on") return;
    chime();
    if (!notifying()) return;
    for (const h of fresh) {
      try {
        const note = new Notification(`新しい相談 #${h.id}（${h.channel_label}）`, {
          body: [h.brief, h.asked ? `「${h.asked}」` : ""].filter(Boolean).join("\n") || h.reason,
          tag: `yarigai-handoff-${h.id}`,
        });
        note.onclick = () => { window.focus(); window.location.href = `/console/handoffs/${h.id}`; };
      } catch (error) { /* the queue still shows it */ }
    }
  }

  // ------------------------------------------------------------ saved replies

  const canned = document.getElementById("canned");
  if (canned && composer) {
    canned.addEventListener("change", () => {
      const option = canned.selectedOptions[0];
      if (!option || !option.value) return;
      composer.value = option.dataset.text;
      composer.focus();
      if (option.dataset.missing) toast(`この相談には値がないため空欄です: ${option.dataset.missing}。直してから送ってください。`, true);
      canned.value = "";
    });
  }

  // ------------------------------------------------------------ live conversation

  const conversation = document.getElementById("conversation");
  const lines = document.getElementById("lines");
  const senders = { user: "ユーザー", bot: "ボット", agent: "担当者", note: "メモ", system: "システム" };

  function phaseOf(h) {
    if (h.status === "waiting") return "waiting";
    if (h.status === "claimed") return h.agent === me ? "mine" : "other";
    return "closed";
  }

  function applyHandoff(h) {
    const phase = phaseOf(h);
    conversation.dataset.phase = phase;
    for (const node of conversation.querySelectorAll("[data-when]")) node.hidden = node.dataset.when !== phase;
    const status = document.getElementById("status");
    status.className = `badge ${h.status}`;
    status.textContent = h.status_label + (h.agent_name ? `（${h.agent_name}）` : "");
    const holder = document.getElementById("holder");
    if (holder) holder.textContent = h.agent_name || "";
    const waited = document.getElementById("waited");
    if (waited && h.status !== "waiting") waited.textContent = `依頼 ${dated.format(new Date(h.requested_at))}`;
    const closed = document.getElementById("closed-status");
    if (closed) closed.textContent = h.status_label + (h.outcome_label ? `・${h.outcome_label}` : "");
  }

  function appendLines(items) {
    const nearBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 80;
    for (const line of items) {
      if (lines.querySelector(`[data-id="${line.id}"]`)) continue;
      const li = el("li", `line ${line.sender} fresh`);
      li.dataset.id = String(line.id);
      const who = line.agent_name || senders[line.sender] || line.sender;
      li.append(el("span", "who", line.sender === "note" ? `${who}・メモ` : who), el("span", "text", line.text));
      if (line.choices && line.choices.length) {
        const chips = el("span", "choices");
        for (const c of line.choices) chips.append(el("span", "chip", c));
        li.append(chips);
      }
      const t = el("time");
      t.setAttribute("datetime", line.at);
      t.textContent = clock.format(new Date(line.at));
      li.append(t);
      lines.append(li);
      conversation.dataset.after = String(line.id);
    }
    if (nearBottom) lines.scrollTop = lines.scrollHeight;
  }

  // ------------------------------------------------------------ the stream

  function connect() {
    let url = "/console/events";
    if (conversation) url += `?handoff=${conversation.dataset.handoff}&after=${conversation.dataset.after}`;
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.addEventListener("open", () => { if (live) { live.classList.remove("off"); live.textContent = "● ライブ"; } });
    source.addEventListener("error", () => { if (live) { live.classList.add("off"); live.textContent = "● 再接続中…"; } });
    source.addEventListener("queue", (event) => renderQueue(JSON.parse(event.data)));
    if (conversation) {
      source.addEventListener("handoff", (event) => applyHandoff(JSON.parse(event.data)));
      source.addEventListener("lines", (event) => appendLines(JSON.parse(event.data)));
      source.addEventListener("gone", () => source.close());
    }
  }

  showNotifyButton();
  localTimes(document);
  refreshSince();
  setInterval(refreshSince, 30000);
  if (lines) lines.scrollTop = lines.scrollHeight;
  if (body.dataset.page === "queue" || body.dataset.page === "handoff") connect();
})();
