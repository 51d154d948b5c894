"""Losses and training techniques as curves: balanced L1, long-tail class weights, IoU-balanced sampling."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explorer.losses import class_weights, focal_weight, long_tail_counts, regression_curves, sample_negatives
from ui.common import drop_unused_link_params, guard, page_setup, plot_config
from ui.figures import class_weight_plot

# Checked against the figure it describes by tests/app/test_teaching_figures.py
WEIGHTS_CAPTION = ("Cost-sensitive CE weighs each class by n_min/n_c: the rarest class gets the largest "
                   "weight, the most frequent the smallest. EQL suppresses the negative gradients of the "
                   "classes whose frequency is below λ (the grey band; none when every class is above λ). "
                   "Balanced Softmax adds log n_c to the logits: shown as the prior n_c it multiplies in.")

INLIER_X = 0.5  # the error at which the balanced L1 caption compares the gradients (an inlier: |x| < 1)

page_setup("Losses", ":material/show_chart:")
st.title("Losses and training techniques")
drop_unused_link_params(())  # this page takes nothing from a link

tab_l1, tab_weights, tab_sampling = st.tabs(["Balanced L1 (Libra R-CNN)", "Long-tail class weights", "IoU-balanced sampling"])

with tab_l1, guard("The balanced L1 curves"):
    c1, c2, c3 = st.columns(3)
    alpha = c1.slider("α (gradient of inliers)", 0.1, 2.0, 0.5, 0.05, key="loss_alpha")
    gamma = c2.slider("γ (gradient of outliers)", 0.5, 3.0, 1.5, 0.05, key="loss_gamma")
    beta = c3.slider("smooth-L1 β", 0.1, 2.0, 1.0, 0.05, key="loss_beta")
    curves = regression_curves(alpha, gamma, beta)
    # The claim is read off the plotted curves (checked by tests/app/test_page_review.py): at these sliders the
    # balanced gradient may fall below smooth L1's, and then the sentence says so.
    balanced_at, smooth_at = (float(np.interp(INLIER_X, curves["x"], curves["gradient"][name]))
                              for name in ("balanced L1", "smooth L1"))
    st.markdown(f"b = e^(γ/α) − 1 = **{curves['b']:.2f}** keeps the gradient continuous at |x| = 1. Libra R-CNN "
                "raises the gradient of small errors (inliers) above smooth L1's, so that easy, accurate boxes are not "
                f"drowned out by outliers: at |x| = {INLIER_X}, balanced L1's gradient is **{balanced_at:.2f}**, "
                f"{'above' if balanced_at > smooth_at else 'not above'} smooth L1's **{smooth_at:.2f}** (L1's is 1).")
    p1, p2 = st.columns(2)
    for col, key, title in ((p1, "loss", "Loss against |x|"), (p2, "gradient", "Gradient against |x|")):
        fig = go.Figure([go.Scatter(x=curves["x"], y=ys, mode="lines", name=name) for name, ys in curves[key].items()])
        # short titles and the legend below the plot: at 800 px wide each chart is ~230 px and a side legend
        # squeezed the curves while the longer titles were cut
        fig.update_layout(title=title, xaxis_title="|x| (normalised box error)", yaxis_title=key, height=380,
                          legend=dict(orientation="h", y=-0.3))
        col.plotly_chart(fig, width="stretch", config=plot_config())

with tab_weights, guard("The class weights"):
    c1, c2, c3, c4 = st.columns(4)
    classes = c1.slider("Classes", 2, 1000, 100, key="loss_classes")
    imbalance = c2.select_slider("Imbalance factor (largest / smallest)", [1, 10, 50, 100, 200, 1000], 100, key="loss_imb")
    cb_beta = c3.select_slider("class-balanced β", [0.9, 0.99, 0.999, 0.9999], 0.999, key="loss_cb_beta")
    eql = c4.select_slider("EQL threshold λ (frequency)", [1e-4, 5e-4, 1.76e-3, 5e-3, 1e-2], 1.76e-3, key="loss_eql")
    counts = long_tail_counts(classes, 5000, imbalance)
    weights = class_weights(counts, cb_beta, eql)
    kept = weights.pop("EQL negatives kept")  # 0/1 per class: a band, not a line on a log axis
    fig = class_weight_plot(counts.tolist(), weights, kept)
    st.plotly_chart(fig, width="stretch", config=plot_config())
    st.caption(WEIGHTS_CAPTION)
    gamma_f = st.slider("Focal γ", 0.0, 5.0, 2.0, 0.5, key="loss_focal")
    p = np.linspace(0.01, 0.99, 99)
    focal = go.Figure(go.Scatter(x=p, y=focal_weight(p, gamma_f), mode="lines"))
    focal.update_layout(title=f"Focal loss: (1 − p_t)^{gamma_f:g} down-weights examples already classified well",
                        xaxis_title="p_t (probability of the true class)", yaxis_title="weight on the CE term", height=340)
    st.plotly_chart(focal, width="stretch", config=plot_config())

with tab_sampling, guard("The sampling simulation"):
    c1, c2 = st.columns(2)
    bins = c1.slider("IoU bins K", 1, 10, 3, key="loss_bins", help="Libra R-CNN's default is 3")
    samples = c2.slider("Negatives sampled per image", 64, 1024, 384, 64, key="loss_samples")
    result = sample_negatives(bins=bins, samples=samples)
    centres = [(a + b) / 2 for a, b in zip(result["edges"][:-1], result["edges"][1:])]
    fig = go.Figure([go.Bar(x=centres, y=result["random"], name="random sampling"),
                     go.Bar(x=centres, y=result["iou_balanced"], name=f"IoU-balanced, K = {bins}")])
    fig.update_layout(barmode="group", title=f"IoU of {samples} sampled negatives, from {result['candidates']:,} synthetic proposals",
                      xaxis_title="IoU with the nearest ground-truth box", yaxis_title="sampled negatives", height=400)
    st.plotly_chart(fig, width="stretch", config=plot_config())
    st.markdown(f"Share of sampled negatives with IoU above 0.05 (where the paper finds most hard negatives): random "
                f"**{result['random_share_above_0_05']:.0%}**, IoU-balanced **{result['balanced_share_above_0_05']:.0%}** "
                f"(all candidates: {result['candidates_share_above_0_05']:.0%}).")
