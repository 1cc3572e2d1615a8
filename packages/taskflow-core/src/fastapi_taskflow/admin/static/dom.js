// Small DOM helpers. Every piece of task data goes in as text (textContent or a text
// node), never as markup: this module has no innerHTML anywhere, on purpose.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Build an element: h("td", {class: "num", title: "x"}, "text", otherNode).
 * Strings and numbers among the children become text nodes; null/false are skipped.
 * Attributes are set with setAttribute (values are never parsed as markup); "dataset"
 * takes an object.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Same as h() for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

function applyAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el` with `children` (text or nodes). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Set text only when it changed (keeps untouched rows untouched). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

export const $ = (selector, root = document) => root.querySelector(selector);
