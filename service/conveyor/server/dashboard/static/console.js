// Conveyor dashboard: tabs, live refresh from the event stream, copy buttons, confirms.
// No framework: the server renders every piece of HTML; this only swaps fragments in.
(function () {
  "use strict";

  function showTab(name) {
    document.querySelectorAll(".tabs [data-tab]").forEach(function (b) {
      b.classList.toggle("on", b.dataset.tab === name);
    });
    document.querySelectorAll("[data-pane]").forEach(function (p) {
      p.hidden = p.dataset.pane !== name;
    });
  }

  function currentTab() {
    var on = document.querySelector(".tabs [data-tab].on");
    return on ? on.dataset.tab : null;
  }

  document.addEventListener("click", function (e) {
    var tab = e.target.closest(".tabs [data-tab]");
    if (tab) {
      showTab(tab.dataset.tab);
      history.replaceState(null, "", "#" + tab.dataset.tab);
      return;
    }
    var copy = e.target.closest("[data-copy]");
    if (copy) {
      var text = copy.dataset.copy;
      var done = function () { copy.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, done);
      } else {
        var area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        try { document.execCommand("copy"); } catch (err) { /* shown below */ }
        area.remove(); done();
      }
    }
  });

  document.addEventListener("change", function (e) {
    var form = e.target.closest("form[data-autosubmit]");
    if (form) form.submit();
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });

  // Live part of a page: reload it (debounced) on each event of the stream, and every
  // two seconds while something runs, so progress shows without a reload.
  function live(box) {
    var timer = null, busy = false, again = false;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(box.dataset.src, { headers: { "x-fragment": "1" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) {
            var tab = currentTab();
            var open = Array.prototype.map.call(box.querySelectorAll("details[open]"), function (d) {
              return d.closest("[data-task]") ? d.closest("[data-task]").dataset.task : null;
            });
            box.innerHTML = html;
            if (tab) showTab(tab);
            open.forEach(function (id) {
              var d = id && box.querySelector('[data-task="' + id + '"] details');
              if (d) d.open = true;
            });
            box.dataset.refreshed = String(Number(box.dataset.refreshed || 0) + 1);
          }
        })
        .finally(function () {
          busy = false;
          if (again) { again = false; schedule(); }
        });
    }
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, Number(box.dataset.debounce || 150));
    }
    if (box.dataset.events && window.EventSource) {
      var source = new EventSource(box.dataset.events);
      source.onmessage = schedule;
      // "ready": the server's watch is subscribed; refresh once to cover the gap
      // between this page's render and that moment.
      source.addEventListener("ready", function () {
        box.dataset.connected = "1";
        schedule();
      });
    }
    if (box.dataset.poll) {
      // A command followed until it is final (SUCCEEDED, FAILED or TIMED_OUT).
      var poll = setInterval(function () {
        if (box.querySelector("[data-final]")) { clearInterval(poll); return; }
        schedule();
      }, Number(box.dataset.poll));
    }
    setInterval(function () {
      var running = box.querySelector("[data-running]");
      if (running && Number(running.dataset.running) > 0 && !document.hidden) schedule();
    }, 2000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var hash = location.hash.replace("#", "");
    if (hash && document.querySelector('.tabs [data-tab="' + hash + '"]')) showTab(hash);
    document.querySelectorAll("[data-src]").forEach(live);
  });
})();
