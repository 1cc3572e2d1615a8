// Light / dark: follows prefers-color-scheme until the toggle picks one (remembered).

const KEY = "taskflow-dashboard-theme";
const MODES = ["system", "light", "dark"];
const LABELS = { system: "auto", light: "light", dark: "dark" };

function apply(mode, button) {
  const root = document.documentElement;
  if (mode === "system") delete root.dataset.theme;
  else root.dataset.theme = mode;
  button.dataset.mode = mode;
  button.querySelector(".theme-label").textContent = LABELS[mode];
  button.title = mode === "system" ? "Theme: follow the system" : `Theme: ${mode}`;
}

export function initTheme(button) {
  let mode = "system";
  try {
    mode = localStorage.getItem(KEY) || "system";
  } catch {
    // storage disabled: follow the system
  }
  if (!MODES.includes(mode)) mode = "system";
  apply(mode, button);
  button.addEventListener("click", () => {
    mode = MODES[(MODES.indexOf(mode) + 1) % MODES.length];
    apply(mode, button);
    try {
      localStorage.setItem(KEY, mode);
    } catch {
      // not remembered; still applied
    }
  });
}
