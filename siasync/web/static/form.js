// The job form: the output grid's parameters are shown only for MODE=mosaic or stack.
// Without JavaScript they are always shown, and the server ignores the empty ones.
"use strict";
(function () {
  const mode = document.getElementById("mode"), grid = document.getElementById("grid");
  if (!mode || !grid) return;
  // hidden, the grid is also disabled: its values are not sent with a cutout job
  const update = () => { grid.hidden = grid.disabled = mode.value === "cutout"; };
  mode.addEventListener("change", update);
  update();
})();
