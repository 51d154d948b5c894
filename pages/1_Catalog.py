"""Catalog: every roster architecture, searchable and filterable; any torchvision/timm model by name."""
import pandas as pd
import streamlit as st

from explorer.catalog import catalog_rows, load_catalog
from explorer.measured import load_measured
from ui.common import drop_unused_link_params, guard, page_setup
from ui.components import more_columns

# The Source column names the library a model is built from; where each published figure comes from is a column of its own.
PUBLISHED_CAPTION = ("published figures come from torchvision's weight metadata, the paper or its official repository, "
                     "or timm's results table: the **Published source** column (scroll right) names which.")

page_setup("Catalog", ":material/menu_book:")
st.title("Catalog")
drop_unused_link_params(())  # this page takes nothing from a link


# What an 800-pixel-wide window shows without scrolling sideways: the open link and the id (both pinned), the
# measured and published headline figures; the descriptive columns after them; the rest behind "More columns".
COMPACT = ["open", "id", "params (M)", "GMACs", "published accuracy", "metric", "memory access (MB)", "year", "family",
           "source", "status", "published source", "paper"]
COLUMNS = {
    "open": st.column_config.TextColumn("Open", pinned=True, help="Click to open this model in the Model page (this tab)"),
    "id": st.column_config.TextColumn("Model id", pinned=True),
    "params (M)": st.column_config.NumberColumn("Params (M)", format="%,.2f", help="Parameters, in millions"),
    # four decimals: LeNet-5's 416,520 MACs read 0.0004, not 0.000
    "GMACs": st.column_config.NumberColumn("GMACs", format="%,.4f", help="Multiply-accumulates, in billions"),
    "published accuracy": st.column_config.NumberColumn("Published", format="%.2f",
                                                        help="The published accuracy, in the unit the Metric column names"),
    "metric": st.column_config.TextColumn("Metric"),
    "memory access (MB)": st.column_config.NumberColumn(
        "Mem. access (MB)", format="%,.1f", help="Memory access cost: bytes read and written by all ops (not MACs)"),
    "year": st.column_config.NumberColumn("Year", format="%d"),
    "family": st.column_config.TextColumn("Family"),
    "source": st.column_config.TextColumn("Source"),
    "status": st.column_config.TextColumn("Status"),
    "published source": st.column_config.TextColumn("Published source"),
    "paper": st.column_config.LinkColumn("Paper", display_text="paper ↗", help="Opens the paper in a new tab"),
    "section": st.column_config.TextColumn("Section"),
    "input": st.column_config.TextColumn("Input (C×H×W)"),
    "published params (M)": st.column_config.NumberColumn("Published params (M)", format="%,.2f"),
    "published GMACs": st.column_config.NumberColumn("Published GMACs", format="%,.3f"),
}


@st.cache_data(show_spinner=False)
def catalog_frame() -> pd.DataFrame:
    measured = load_measured()
    rows = []
    for row in catalog_rows():
        m = measured.get(row["id"], {})
        rows.append(
            {
                "id": row["id"],
                "family": row["family"],
                "section": row["section"],
                "year": row["year"],
                "source": row["source"],
                "status": "ready" if row["implemented"] else "needs native implementation",
                "params (M)": m["params"] / 1e6 if "params" in m else None,
                "GMACs": m["macs"] / 1e9 if "macs" in m else None,
                "memory access (MB)": m["memory_access_bytes"] / 1e6 if "memory_access_bytes" in m else None,
                "input": "×".join(map(str, m["input_shape"][1:])) if "input_shape" in m else "—",
                "published accuracy": row["published_top1"],
                # text cells say what is missing (a null cell reads "None")
                "metric": row["published_metric"] if row["published_top1"] is not None else "none published",
                "published params (M)": row["published_params_m"],
                "published GMACs": row["published_gmacs"],
                "published source": row["published_source"] or "—",
                "paper": row["paper"]["url"],
                "open": "open →" if row["implemented"] else "",
            }
        )
    frame = pd.DataFrame(rows)
    return frame[COMPACT + [c for c in frame.columns if c not in COMPACT]]


frame = catalog_frame()

with st.container(border=True):
    c1, c2, c3 = st.columns([2, 2, 2])
    query = c1.text_input("Search", placeholder="name, family or id, e.g. swin, mobile, dense", key="catalog_query")
    sections = c2.multiselect("Section", sorted(frame["section"].unique()), key="catalog_sections",
                              help="The roster's sections; search by name for a single family")
    sources = c3.multiselect("Source", ["torchvision", "timm", "native"], key="catalog_sources",
                             help="torchvision / timm: built from the library; native: written in this project")
    c4, c5 = st.columns(2)  # the toggle goes below: in a third column its label was cut at 800 px
    years = c4.slider("Year", int(frame["year"].min()), int(frame["year"].max()),
                      (int(frame["year"].min()), int(frame["year"].max())), key="catalog_years")
    max_gmacs = float(frame["GMACs"].max(skipna=True) or 1.0)
    gmacs = c5.slider("Cost (GMACs, at native input)", 0.0, float(round(max_gmacs + 0.5)), (0.0, float(round(max_gmacs + 0.5))),
                      key="catalog_gmacs", help="Multiply-accumulates measured by this app at each model's native input size")
    ready_only = st.toggle("Only models I can build now", key="catalog_ready")

view = frame
if query:
    q = query.lower()
    view = view[view["id"].str.lower().str.contains(q, regex=False) | view["family"].str.lower().str.contains(q, regex=False)]
if sections:
    view = view[view["section"].isin(sections)]
if sources:
    view = view[view["source"].isin(sources)]
view = view[(view["year"] >= years[0]) & (view["year"] <= years[1])]
cost_filtered = (view["GMACs"] >= gmacs[0]) & (view["GMACs"] <= gmacs[1])
if gmacs != (0.0, float(round(max_gmacs + 0.5))):
    view = view[cost_filtered]  # rows without a measured cost drop out only when the cost filter is used
if ready_only:
    view = view[view["status"] == "ready"]

# Checked against the table it describes by tests/app/test_page_review.py
st.caption(f"{len(view)} of {len(frame)} variants · costs are this app's own counts at each model's native input, "
           f"fp32; {PUBLISHED_CAPTION} Click a row's **open →** to open it in the Model page.")
event = st.dataframe(
    view,
    hide_index=True,
    width="stretch",
    column_config=COLUMNS,
    column_order=more_columns(view.columns, COMPACT, COLUMNS, "catalog_more_columns"),
    key="catalog_table",
    on_select="rerun",
    selection_mode="single-cell",
)
# One click on "open →" opens the model in this tab (a link column would open a new tab and a new session).
for position, column in event.selection.get("cells", []):
    if column == "open" and 0 <= position < len(view) and view.iloc[position]["status"] == "ready":
        st.switch_page("pages/2_Model.py", query_params={"arch": view.iloc[position]["id"]})

st.subheader("Families")
catalog = load_catalog()
shown = [f for f in catalog.families if f.name in set(view["family"])]
if not shown:
    st.info("No family matches these filters.")
for family in shown:
    with st.expander(f"{family.name} · {family.year} · {', '.join(family.sources)}"):
        st.markdown(f"**Paper:** [{family.paper['title']}]({family.paper['url']}) — {family.paper.get('authors', '')}, "
                    f"{family.paper.get('venue', '')}")
        st.markdown(family.description)
        if family.teach:
            st.markdown(f"**What to look at:** {family.teach}")
        if family.native_note:
            st.markdown(f"**Native implementation:** {family.native_note}")
        cols = st.columns(min(len(family.variants), 6))
        for i, variant in enumerate(family.variants):
            col = cols[i % len(cols)]
            if variant.implemented:
                col.page_link("pages/2_Model.py", label=variant.id, query_params={"arch": variant.id})
            else:
                col.caption(f"{variant.id} (needs native implementation)")

st.subheader("Beyond the roster")
st.markdown("Any torchvision or timm model opens by name, with its library's own metadata.")
with st.form("beyond"):
    name = st.text_input("Model", placeholder="timm:convnext_tiny or torchvision:regnet_y_400mf")
    submitted = st.form_submit_button("Open")
if submitted:
    with guard("Opening the model"):
        from explorer.catalog import resolve

        variant = resolve(name.strip())
        st.switch_page("pages/2_Model.py", query_params={"arch": variant.id})
