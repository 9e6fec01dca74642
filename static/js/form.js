// @ts-check
/**
 * The start form, generated from `GET /api/task-types`: one input per
 * parameter of the chosen type, checked against the same schema the server
 * uses (type, minimum, maximum, maxLength, nullable). When the server still
 * refuses, its message ("params.steps: must be at most …") is shown next to
 * the field it names.
 */
import { $, showError } from "./view.js";

/**
 * @typedef {{type: "integer" | "number" | "string" | "boolean", default?: unknown,
 *            minimum?: number, maximum?: number, maxLength?: number, nullable?: boolean,
 *            required?: boolean, description?: string}} ParamSchema
 * @typedef {{name: string, title: string, description: string,
 *            params: Record<string, ParamSchema>}} TaskType
 */

export class StartForm {
  /**
   * @param {HTMLFormElement} form
   * @param {TaskType[]} taskTypes
   * @param {(name: string, params: Record<string, unknown>) => Promise<void>} start
   *   rejects with an error whose `message` may name a field
   */
  constructor(form, taskTypes, start) {
    this.form = form;
    this.types = new Map(taskTypes.map((t) => [t.name, t]));
    this.start = start;
    this.select = /** @type {HTMLSelectElement} */ ($(form, "#task-type"));
    this.fields = /** @type {HTMLElement} */ ($(form, "#params"));
    this.formError = /** @type {HTMLElement} */ ($(form, "#form-error"));
    this.button = /** @type {HTMLButtonElement} */ ($(form, "button[type=submit]"));

    this.select.replaceChildren(...taskTypes.map((t) => new Option(t.title || t.name, t.name)));
    this.select.addEventListener("change", () => this.showType());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    // Re-check a field as it changes, once it has shown an error.
    form.addEventListener("input", (event) => {
      const input = /** @type {HTMLInputElement} */ (event.target);
      if (input.getAttribute("aria-invalid") === "true") this.checkField(input.name);
    });
    this.showType();
  }

  get type() {
    return /** @type {TaskType} */ (this.types.get(this.select.value));
  }

  showType() {
    const type = this.type;
    $(this.form, "#task-description").textContent = type ? type.description : "";
    this.fields.replaceChildren(
      ...Object.entries(type ? type.params : {}).map(([name, schema]) => buildField(name, schema)));
    showError(this.formError, null);
  }

  /**
   * Check one field; show its error and return its value (undefined: send nothing).
   * @param {string} name
   * @returns {{ok: boolean, value?: unknown}}
   */
  checkField(name) {
    const schema = this.type.params[name];
    const input = /** @type {HTMLInputElement} */ (this.form.elements.namedItem(name));
    const { error, value } = readValue(input, schema);
    this.showFieldError(name, error);
    return { ok: !error, value };
  }

  /**
   * @param {string} name
   * @param {string | null} message
   */
  showFieldError(name, message) {
    const input = /** @type {HTMLInputElement | null} */ (this.form.elements.namedItem(name));
    const slot = this.form.querySelector(`#error-${CSS.escape(name)}`);
    if (!input || !slot) return false;
    showError(/** @type {HTMLElement} */ (slot), message);
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    return true;
  }

  async submit() {
    showError(this.formError, null);
    /** @type {Record<string, unknown>} */
    const params = {};
    /** @type {string | null} */
    let firstBad = null;
    for (const name of Object.keys(this.type.params)) {
      const { ok, value } = this.checkField(name);
      if (!ok) firstBad ??= name;
      else if (value !== undefined) params[name] = value;
    }
    if (firstBad) {
      /** @type {HTMLElement} */ (this.form.elements.namedItem(firstBad)).focus();
      return;
    }
    this.button.disabled = true;
    try {
      await this.start(this.type.name, params);
    } catch (error) {
      this.showServerError(/** @type {Error} */ (error).message);
    } finally {
      this.button.disabled = false;
    }
  }

  /**
   * Show "params.NAME: what" next to NAME, anything else above the button.
   * @param {string} message
   */
  showServerError(message) {
    const match = /^params\.([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/s.exec(message);
    if (match && this.showFieldError(match[1], match[2])) {
      /** @type {HTMLElement} */ (this.form.elements.namedItem(match[1])).focus();
      return;
    }
    showError(this.formError, message);
  }
}

/**
 * A label, an input of the schema's kind, its hint and an error slot.
 * @param {string} name
 * @param {ParamSchema} schema
 */
function buildField(name, schema) {
  const wrapper = document.createElement("div");
  wrapper.className = `field field-${schema.type}`;
  const id = `param-${name}`;
  const input = document.createElement("input");
  input.id = id;
  input.name = name;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name.replaceAll("_", " ");
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.id = `hint-${name}`;
  hint.textContent = describe(schema);
  const error = document.createElement("p");
  error.className = "field-error";
  error.id = `error-${name}`;
  error.hidden = true;
  input.setAttribute("aria-describedby", `${hint.id} ${error.id}`);

  if (schema.type === "boolean") {
    input.type = "checkbox";
    input.checked = schema.default === true;
    wrapper.append(input, label, hint, error);
    return wrapper;
  }
  if (schema.type === "integer" || schema.type === "number") {
    input.type = "number";
    input.inputMode = schema.type === "integer" ? "numeric" : "decimal";
    input.step = schema.type === "integer" ? "1" : "any";
    if (schema.minimum !== undefined) input.min = String(schema.minimum);
    if (schema.maximum !== undefined) input.max = String(schema.maximum);
  } else {
    input.type = "text";
    if (schema.maxLength !== undefined) input.maxLength = schema.maxLength;
  }
  input.value = schema.default === null || schema.default === undefined ? "" : String(schema.default);
  if (schema.nullable) input.placeholder = "empty: none";
  input.required = Boolean(schema.required);
  wrapper.append(label, input, hint, error);
  return wrapper;
}

/**
 * The hint under a field: its description and limits.
 * @param {ParamSchema} schema
 */
function describe(schema) {
  const parts = [schema.description ?? ""];
  const { minimum: min, maximum: max } = schema;
  if (min !== undefined && max !== undefined) parts.push(`${min} to ${max}`);
  else if (min !== undefined) parts.push(`at least ${min}`);
  else if (max !== undefined) parts.push(`at most ${max}`);
  if (schema.maxLength !== undefined) parts.push(`up to ${schema.maxLength} characters`);
  if (schema.nullable) parts.push("optional");
  return parts.filter(Boolean).join(" · ");
}

/**
 * The value to send for one input, or why it cannot be sent: the same
 * rules and wording as the server's parameter checks.
 * @param {HTMLInputElement} input
 * @param {ParamSchema} schema
 * @returns {{value?: unknown, error: string | null}}
 */
export function readValue(input, schema) {
  if (schema.type === "boolean") return { value: input.checked, error: null };
  const raw = input.value;
  if (raw === "" && !input.validity.badInput) {
    if (schema.nullable) return { value: null, error: null };
    if (schema.required) return { error: "required" };
    if (schema.type !== "string") return { value: undefined, error: null }; // the default applies
  }
  if (schema.type === "string") {
    if (schema.maxLength !== undefined && raw.length > schema.maxLength) {
      return { error: `must be at most ${schema.maxLength} characters, got ${raw.length}` };
    }
    return { value: raw, error: null };
  }
  const number = Number(raw);
  if (input.validity.badInput || raw.trim() === "" || !Number.isFinite(number)) {
    return { error: schema.type === "integer" ? "must be a whole number" : "must be a number" };
  }
  if (schema.type === "integer" && !Number.isInteger(number)) {
    return { error: `must be a whole number, got ${raw}` };
  }
  if (schema.minimum !== undefined && number < schema.minimum) {
    return { error: `must be at least ${schema.minimum}, got ${raw}` };
  }
  if (schema.maximum !== undefined && number > schema.maximum) {
    return { error: `must be at most ${schema.maximum}, got ${raw}` };
  }
  return { value: number, error: null };
}
