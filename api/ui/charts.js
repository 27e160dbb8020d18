// The dashboard's interactive charts, drawn by Apache ECharts (vendor/, loaded by index.html
// as window.echarts; no network): learning curves (hover, legend, drag to zoom, smoothing, a
// log scale for loss), a study's parallel coordinates and best value so far, and the
// confusion matrix as a heat map. Tests read a chart through echarts.getInstanceByDom(el).

const echarts = window.echarts;
const PANELS = ["accuracy", "loss"];
const CURVES_LEFT = 60; // pixels left of the accuracy panel
const WORST_TO_BEST = ["#d94e5d", "#eac736", "#50a3ba"];

function node(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) element.setAttribute(key, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

function mount(element) {
  // The element's chart, made on first use (SVG: crisp, and its legend is in the DOM) and
  // resized with the element.
  let chart = echarts.getInstanceByDom(element);
  if (!chart) {
    chart = echarts.init(element, null, { renderer: "svg" });
    new ResizeObserver(() => chart.resize()).observe(element);
  }
  return chart;
}

function onFrame(action) {
  // Calls action once per animation frame however often asked (a stream replaying epochs).
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      action();
    });
  };
}

const number = (value) => (value === null || value === undefined ? "–" : Number(value.toPrecision(4)).toString());

function swatch(color) {
  // Styled through the CSSOM: the page's CSP refuses inline style attributes.
  const mark = node("span", { class: "swatch" });
  mark.style.background = color;
  return mark;
}

function curveTip(params) {
  // Each shown series' value at the hovered epoch (the raw value beside a smoothed one).
  const rows = Array.isArray(params) ? params : [params];
  const seen = new Set();
  const tip = node("div", { class: "chart-tip" }, node("strong", {}, `Epoch ${rows[0]?.value[0]}`));
  for (const row of rows) {
    if (seen.has(row.seriesId)) continue;
    seen.add(row.seriesId);
    const [, shown, raw] = row.value;
    const panel = row.seriesId.split(":")[0];
    const text = `${row.seriesName}${row.seriesName.includes(panel) ? "" : ` ${panel}`}: ${number(shown)}`;
    tip.append(node("div", { class: "chart-tip-row", "data-series": row.seriesId }, swatch(row.color),
      raw !== shown ? `${text} (raw ${number(raw)})` : text));
  }
  return tip;
}

export function smooth(points, weight) {
  // TensorBoard's smoothing: an exponential moving average, debiased at the start.
  let average = 0;
  let total = 0;
  return points.map(([x, y]) => {
    if (weight === 0) return [x, y, y];
    average = average * weight + (1 - weight) * y;
    total = total * weight + (1 - weight);
    return [x, average / total, y];
  });
}

export function curvesChart(id, label) {
  // Accuracy and loss panels side by side. draw(series, joins) takes [{ name, panel:
  // "accuracy" | "loss", points: [[epoch, value], ...] }] (a name shared by both panels is one
  // legend entry) and the epochs where a continued run starts (dashed lines).
  const element = node("div", { id, class: "chart curves", role: "img", "aria-label": label });
  const smoothing = node("input", { type: "range", id: `${id}-smoothing`, min: 0, max: 0.95, step: 0.05, value: 0 });
  const smoothingShown = node("output", {}, "0");
  const logScale = node("input", { type: "checkbox", id: `${id}-log` });
  const controls = node("div", { class: "toolbar chart-controls" },
    node("label", {}, "Smoothing ", smoothing, " ", smoothingShown),
    node("label", {}, logScale, " Log scale for loss"),
    node("span", { class: "muted" }, "Hover for values, click the legend to hide a series, drag to zoom."));
  const box = node("div", { hidden: true }, controls, element);
  let series = [];
  let joins = [];
  let zoomArmed = false;
  const draw = onFrame(() => {
    const chart = mount(element);
    const weight = Number(smoothing.value);
    smoothingShown.textContent = weight.toFixed(2);
    chart.setOption({
      animation: false,
      title: [{ text: "Accuracy", left: "4%", textStyle: { fontSize: 13 } }, { text: "Loss", left: "54%", textStyle: { fontSize: 13 } }],
      grid: [{ left: CURVES_LEFT, right: "53%", top: 40, bottom: 85 }, { left: "55%", right: 25, top: 40, bottom: 85 }],
      xAxis: PANELS.map((_, index) => ({ gridIndex: index, type: "value", name: "epoch", nameLocation: "middle", nameGap: 26, minInterval: 1, scale: true })),
      yAxis: [{ gridIndex: 0, type: "value", scale: true }, { gridIndex: 1, type: logScale.checked ? "log" : "value", scale: true }],
      legend: { type: "scroll", bottom: 0 },
      tooltip: { trigger: "axis", formatter: curveTip, confine: true },
      axisPointer: { link: [{ xAxisIndex: "all" }] },
      toolbox: { right: 20, feature: { dataZoom: { yAxisIndex: "none", filterMode: "none", title: { zoom: "Drag to zoom", back: "Zoom back" } }, restore: { title: "Reset" } } },
      series: series.map((curve) => {
        const panel = PANELS.indexOf(curve.panel);
        const points = curve.points.filter(([, y]) => y !== null && y !== undefined);
        return {
          id: `${curve.panel}:${curve.name}`, name: curve.name, type: "line", xAxisIndex: panel, yAxisIndex: panel,
          data: smooth(points, weight), showSymbol: points.length < 40, symbolSize: 5,
          markLine: joins.length && panel === 0 && curve === series[0]
            ? { silent: true, symbol: "none", lineStyle: { type: "dashed", color: "#999" }, label: { show: false }, data: joins.map((epoch) => ({ xAxis: epoch - 0.5 })) }
            : undefined,
        };
      }),
    }, { replaceMerge: ["series"] });
    if (!zoomArmed) {
      // Dragging across a panel zooms to that range of epochs (the toolbox undoes it).
      chart.dispatchAction({ type: "takeGlobalCursor", key: "dataZoomSelect", dataZoomSelectActive: true });
      zoomArmed = true;
    }
    element.dataset.series = String(series.length);
  });
  smoothing.addEventListener("input", draw);
  logScale.addEventListener("change", draw);
  return {
    element: box,
    draw: (shown, starts = []) => {
      series = shown;
      joins = starts;
      box.hidden = false;
      draw();
    },
    hide: () => { box.hidden = true; },
  };
}

export function epochCurves(epochs) {
  // One run's four curves from its history rows.
  const rows = [...epochs].sort((a, b) => a.epoch - b.epoch);
  const curve = (name, panel) => ({ name, panel, points: rows.map((row) => [row.epoch, row[name]]) });
  return [curve("accuracy", "accuracy"), curve("val_accuracy", "accuracy"), curve("loss", "loss"), curve("val_loss", "loss")];
}

export function testCurves(label, histories) {
  // The test curves of a group of runs (seeds), averaged epoch by epoch, named `label`.
  const mean = (metric) => {
    const sums = new Map();
    for (const epochs of histories) {
      for (const row of epochs) {
        if (row[metric] === null || row[metric] === undefined) continue;
        const [sum, count] = sums.get(row.epoch) ?? [0, 0];
        sums.set(row.epoch, [sum + row[metric], count + 1]);
      }
    }
    return [...sums.entries()].sort(([a], [b]) => a - b).map(([epoch, [sum, count]]) => [epoch, sum / count]);
  };
  return [
    { name: label, panel: "accuracy", points: mean("val_accuracy") },
    { name: label, panel: "loss", points: mean("val_loss") },
  ];
}

export function runGroups(runs) {
  // A study's runs with an epoch by variant (a search's: by trial), in the order they first
  // appear.
  const groups = new Map();
  for (const run of runs.filter((run) => run.epochs.length)) {
    const label = run.variant ?? (run.trial_number === null ? run.experiment_id.slice(0, 8) : `trial ${run.trial_number}`);
    if (!groups.has(label)) groups.set(label, []);
    groups.get(label).push(run);
  }
  return [...groups.entries()];
}

const finished = (run) => run.value !== null && (run.status === "succeeded" || run.pruned);
const shownParam = (value) => (value === null || value === undefined ? "none" : typeof value === "number" ? value : String(value));

function parallelAxes(parameters, runs, metric) {
  // An axis per parameter (numbers on a value axis, a log one over two decades; others as
  // categories), then the metric's, from its lowest value to its highest.
  const axes = parameters.map((key, dim) => {
    const values = runs.map((run) => shownParam(run.params[key]));
    if (values.every((value) => typeof value === "number")) {
      const positive = values.every((value) => value > 0);
      const wide = positive && Math.max(...values) / Math.min(...values) >= 100;
      return { dim, name: key, type: wide ? "log" : "value", scale: true };
    }
    return { dim, name: key, type: "category", data: [...new Set(values.map(String))].sort() };
  });
  return [...axes, { dim: parameters.length, name: metric, type: "value", min: "dataMin", max: "dataMax", axisLabel: { formatter: number } }];
}

export function studyCharts(id) {
  // A grid's or a search's parallel coordinates (one line per finished run, brushable on every
  // axis; a click opens the run) and its best value so far, in the order runs finished.
  const parallel = node("div", { id: `${id}-parallel`, class: "chart parallel", role: "img", "aria-label": "Parallel coordinates of the finished runs" });
  const best = node("div", { id: `${id}-best`, class: "chart best-so-far", role: "img", "aria-label": "Best value so far" });
  const note = node("p", { class: "muted" }, "Drag along an axis to select a range of it (brush); click a line to open its run.");
  const box = node("section", { id, hidden: true }, node("h2", {}, "Parameters and the metric"), note, parallel, node("h2", {}, "Best value so far"), best);
  let data = null;
  const draw = onFrame(() => {
    const done = data.runs.filter(finished);
    const { metric, direction, parameters } = data;
    const lines = done.map((run) => ({ name: run.experiment_id, value: [...parameters.map((key) => shownParam(run.params[key])), run.value] }));
    const values = done.map((run) => run.value);
    const chart = mount(parallel);
    chart.setOption({
      animation: false,
      parallel: { left: 70, right: 150, top: 40, bottom: 30 },
      parallelAxis: parallelAxes(parameters, done, metric),
      visualMap: { type: "continuous", dimension: parameters.length, min: values.length ? Math.min(...values) : 0, max: values.length ? Math.max(...values) + 1e-9 : 1, right: 10, top: "middle", calculable: false, text: [metric, ""], inRange: { color: direction === "maximize" ? WORST_TO_BEST : [...WORST_TO_BEST].reverse() } },
      series: [{ id: "runs", type: "parallel", lineStyle: { width: 2, opacity: 0.7 }, inactiveOpacity: 0.05, activeOpacity: 1, data: lines }],
    }, { replaceMerge: ["series", "parallelAxis"] });
    parallel.dataset.lines = String(lines.length);
    chart.off("click");
    chart.on("click", (clicked) => { if (clicked.name) location.hash = `#/experiments/${clicked.name}`; });
    chart.off("axisareaselected");
    chart.on("axisareaselected", () => {
      // The runs inside every brushed range, for a test (as ECharts' docs read them).
      const active = chart.getModel().getSeries()[0].getRawIndicesByActiveState("active");
      parallel.dataset.brushed = JSON.stringify(active.map((index) => lines[index].name).sort());
    });

    const order = [...done].sort((a, b) => String(a.finished_at).localeCompare(String(b.finished_at)));
    const better = direction === "maximize" ? Math.max : Math.min;
    let soFar = null;
    const steps = order.map((run, index) => {
      soFar = soFar === null ? run.value : better(soFar, run.value);
      return [index + 1, soFar];
    });
    const label = (run) => run.trial_number === null ? (run.variant ?? run.experiment_id.slice(0, 8)) : `trial ${run.trial_number}`;
    mount(best).setOption({
      animation: false,
      grid: { left: 60, right: 25, top: 30, bottom: 60 },
      xAxis: { type: "value", name: "runs finished", nameLocation: "middle", nameGap: 26, minInterval: 1, min: 1 },
      yAxis: { type: "value", name: metric, scale: true },
      legend: { bottom: 0 },
      tooltip: { trigger: "item", formatter: (item) => node("div", { class: "chart-tip" }, `${item.seriesName}: ${number(item.value[1])}${item.data.label ? ` (${item.data.label})` : ""}`) },
      series: [
        { id: "runs", name: "each run", type: "scatter", symbolSize: 7, data: order.map((run, index) => ({ value: [index + 1, run.value], label: label(run), name: run.experiment_id })) },
        { id: "best", name: "best so far", type: "line", step: "end", showSymbol: false, data: steps },
      ],
    }, { replaceMerge: ["series"] });
    best.dataset.points = String(steps.length);
  });
  return {
    element: box,
    show: (runs) => {
      data = runs;
      box.hidden = !(runs.parameters.length && ["grid", "search"].includes(runs.kind));
      if (!box.hidden) draw();
    },
  };
}

export function heatMap(id, classes, confusion) {
  // The confusion matrix: true class down, predicted across, each cell's count of test images.
  const element = node("div", { id, class: "chart heat-map", role: "img", "aria-label": "Confusion matrix of the test set" });
  const cells = confusion.flatMap((row, actual) => row.map((count, predicted) => [predicted, actual, count]));
  requestAnimationFrame(() => mount(element).setOption({
    animation: false,
    grid: { left: 80, right: 90, top: 20, bottom: 60 },
    xAxis: { type: "category", data: classes, name: "predicted", nameLocation: "middle", nameGap: 30, splitArea: { show: true } },
    yAxis: { type: "category", data: classes, name: "true", nameLocation: "middle", nameGap: 50, inverse: true, splitArea: { show: true } },
    visualMap: { min: 0, max: Math.max(1, ...cells.map(([, , count]) => count)), calculable: true, right: 0, top: "middle", inRange: { color: ["#f7fbff", "#6baed6", "#08306b"] } },
    tooltip: { formatter: (item) => node("div", { class: "chart-tip" }, `true ${classes[item.value[1]]}, predicted ${classes[item.value[0]]}: ${item.value[2]}`) },
    series: [{ id: "confusion", type: "heatmap", data: cells, label: { show: true, fontSize: 10 } }],
  }));
  element.dataset.cells = String(cells.length);
  return element;
}
