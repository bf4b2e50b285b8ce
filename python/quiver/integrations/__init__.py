"""Quiver behind the interfaces other Python libraries call: LangChain (``langchain``),
Chroma (``chroma``) and Ray Data (``ray``). Each module imports its library only when used."""
