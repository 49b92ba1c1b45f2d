/** anywidget entry point of featmon_widget (bundled to featmon_widget/static/widget.js); the
 * named `renderStatic` draws a saved snapshot in a static HTML export. */

import type { AnyWidget } from "@anywidget/types";
import { type FeatmonModel, render } from "./widget";

export { renderStatic } from "./staticView";

const widget: AnyWidget<FeatmonModel> = { render };

export default widget;
