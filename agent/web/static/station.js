// The page's only script: ask /live for news, swap changed text in, add new cards; never reload
// an image already shown. Forms marked data-once disable their button on submit.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const every = Number(body.dataset.refresh) || 3000;

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!form.hasAttribute("data-once")) return;
    if (form.dataset.sent) { ev.preventDefault(); return; }
    form.dataset.sent = "1";
    const b = ev.submitter;
    if (b) setTimeout(() => { b.disabled = true; }, 0);  // after the browser read its name/value
  });

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function known(selector, attr, sigAttr) {
    return Array.from(document.querySelectorAll(selector))
      .map((el) => el.getAttribute(attr) + (sigAttr ? "~" + (el.dataset.sig || "") : ""))
      .join(",");
  }

  function apply(news) {
    if (news.regions) {
      for (const [name, html] of Object.entries(news.regions)) {
        const el = document.querySelector(`[data-region="${name}"]`);
        if (el && el.innerHTML !== html) el.innerHTML = html;
      }
    }
    if (news.units) {
      const list = document.getElementById("units");
      for (const u of news.units) {
        let card = document.querySelector(`[data-unit="${CSS.escape(u.id)}"]`);
        if (!card && u.card && list) {
          card = fragment(u.card);
          list.appendChild(card);
          const none = document.getElementById("no-units");
          if (none) none.remove();
          continue;
        }
        if (!card) continue;
        const status = card.querySelector("[data-status]");
        if (status && status.innerHTML !== u.status) status.innerHTML = u.status;
        const img = card.querySelector("img[data-thumb]");
        if (img && u.thumb && img.getAttribute("src") !== u.thumb) {
          img.src = u.thumb;
          img.hidden = false;
          const placeholder = img.parentElement.querySelector(".hidden-image");
          if (placeholder) placeholder.remove();
        }
      }
      const count = document.getElementById("unit-count");
      if (count) count.textContent = String(document.querySelectorAll("[data-unit]").length);
    }
    if (news.cards) {
      const grid = document.getElementById("captures");
      for (const c of news.cards) {
        const el = fragment(c.html);
        el.dataset.sig = c.sig;
        const old = grid.querySelector(`[data-id="${CSS.escape(c.id)}"]`);
        if (old) old.replaceWith(el);
        else grid.prepend(el);
      }
      if (news.cards.length) {
        const none = document.getElementById("no-captures");
        if (none) none.remove();
        const order = new Map(news.order.map((id, i) => [id, i]));
        const cards = Array.from(grid.children);
        const rank = (el) => order.get(el.dataset.id) ?? 1e9;
        const sorted = [...cards].sort((a, b) => rank(a) - rank(b));
        if (sorted.some((c, i) => c !== cards[i])) sorted.forEach((c) => grid.appendChild(c));
        sorted.slice(96).forEach((c) => c.remove());  // a page left open stays small
      }
    }
  }

  async function poll() {
    const q = new URLSearchParams({ page });
    if (page === "units") q.set("known", known("[data-unit]", "data-unit"));
    if (page === "captures") {
      const grid = document.getElementById("captures");
      new URLSearchParams(grid.dataset.query).forEach((v, k) => q.set(k, v));
      q.set("known", known("#captures [data-id]", "data-id", true));
    }
    try {
      const r = await fetch("/live?" + q.toString(), { credentials: "same-origin" });
      if (r.ok) apply(await r.json());
    } catch (e) { /* the station restarts or the Wi-Fi drops: try again next time */ }
    setTimeout(poll, every);
  }

  async function flashPoll() {
    try {
      const r = await fetch("/flash/job", { credentials: "same-origin" });
      const job = r.ok ? await r.json() : null;
      if (job) {
        document.getElementById("flash-job").hidden = false;
        document.getElementById("flash-state").textContent = job.state;
        document.getElementById("flash-progress").value = job.percent;
        document.getElementById("flash-log").textContent = job.lines.join("\n");
        const steps = document.getElementById("flash-steps");
        steps.innerHTML = "";
        job.steps.forEach((s, i) => {
          const li = document.createElement("li");
          li.textContent = s + (i < job.step ? " ✓" : i === job.step && job.state === "running" ? " …" : "");
          steps.appendChild(li);
        });
        if (job.state !== "running") return;
      }
    } catch (e) { /* try again */ }
    setTimeout(flashPoll, 700);
  }

  if (["overview", "units", "captures"].includes(page)) {
    setTimeout(poll, every);
  }
  if (page === "flash") flashPoll();
})();
