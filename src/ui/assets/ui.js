// The dashboard's behaviour: draw each page's charts from the JSON it carries, and keep a
// page live by fetching it again every few seconds and swapping its `data-live` part.
// Served with a policy that allows this file and Chart.js only (no inline script).
(function () {
  "use strict";

  var money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 6 });

  // Draws every chart under `root`: a canvas names the script element holding its spec,
  // {type, labels, datasets, stacked, money}.
  function drawCharts(root) {
    if (typeof Chart === "undefined") return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.chart);
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      var old = Chart.getChart(canvas);
      if (old) old.destroy();
      var axis = { stacked: !!spec.stacked, grid: { color: "#eef0f3" }, ticks: { color: "#5c6370" } };
      var values = Object.assign({}, axis, { beginAtZero: true });
      if (spec.money) values.ticks = Object.assign({}, axis.ticks, { callback: function (v) { return money.format(v); } });
      new Chart(canvas, {
        type: spec.type,
        data: { labels: spec.labels, datasets: spec.datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 12, color: "#2b2f36" } },
            tooltip: spec.money ? { callbacks: { label: function (c) { return c.dataset.label + ": " + money.format(c.parsed.y); } } } : {}
          },
          scales: { x: axis, y: values }
        }
      });
    });
  }

  // Fetches the page again and swaps its live part; a page that now asks to sign in (the
  // token was removed) is followed.
  function refresh(live) {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected) { window.location.assign(response.url); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text === null) { schedule(live); return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("[data-live]");
        if (!fresh) { schedule(live); return; }
        var open = live.querySelectorAll("details[open]").length > 0;
        if (open) { schedule(live); return; } // a person is reading: do not pull it away
        live.replaceWith(fresh);
        drawCharts(fresh);
        schedule(fresh);
      })
      .catch(function () { schedule(live); });
  }

  function schedule(live) {
    var seconds = parseInt(live.dataset.live, 10) || 5;
    window.setTimeout(function () {
      if (document.hidden) { schedule(live); return; }
      refresh(live);
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    var live = document.querySelector("[data-live]");
    if (live) schedule(live);
  });
})();
