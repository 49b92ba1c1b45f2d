/** anywidget entry point of featmon_widget (bundled to featmon_widget/static/widget.js). */

import type { AnyWidget } from "@anywidget/types";
import { type FeatmonModel, render } from "./widget";

const widget: AnyWidget<FeatmonModel> = { render };

export default widget;
